/**
 * Keeps each spawned call's id in its cell's metadata (`jupyter_gpu.calls`, calls.ts), written when
 * the call's output appears in the cell: a kernel cannot write cell metadata, the page can, and
 * the saved .ipynb then carries the ids even after the outputs are cleared.
 */
import type { ICellModel, ICodeCellModel } from '@jupyterlab/cells';
import type { NotebookPanel } from '@jupyterlab/notebook';

import { CALL_MIME, CELL_KEY, ICallData, callOf, withCalls } from './calls';

export function recordCalls(panel: NotebookPanel): void {
  void panel.context.ready.then(() => {
    const model = panel.model;
    if (!model) {
      return;
    }
    const watched = new WeakSet<ICellModel>();
    const watch = (cell: ICellModel) => {
      if (cell.type !== 'code' || watched.has(cell)) {
        return;
      }
      watched.add(cell);
      // only outputs added from now on: the outputs a notebook opens with came with its metadata,
      // and recording them would mark a notebook dirty by opening it
      (cell as ICodeCellModel).outputs.changed.connect((_, change) => {
        if (change.type !== 'add' && change.type !== 'set') {
          return;
        }
        const calls = change.newValues
          .map(o => (o.data && CALL_MIME in o.data ? callOf(o.data[CALL_MIME]) : null))
          .filter((c): c is ICallData => c !== null);
        if (!calls.length) {
          return;
        }
        // after the output's own change has reached the shared model, not inside it
        void Promise.resolve().then(() => {
          if (cell.isDisposed) {
            return;
          }
          const next = withCalls(cell.getMetadata(CELL_KEY), calls);
          if (next) {
            cell.setMetadata(CELL_KEY, next as any);
          }
        });
      });
    };
    for (const cell of model.cells) {
      watch(cell);
    }
    model.cells.changed.connect((_, change) => {
      if (change.type === 'add' || change.type === 'set') {
        change.newValues.forEach(watch);
      }
    });
  });
}
