/**
 * Spawned calls (`f.spawn(x)`, issue 22): the compact line that renders the kernel's
 * `application/vnd.jupyter-gpu.call+json` output, and the cell metadata that keeps each call's id
 * (`metadata.jupyter_gpu.calls`, a list of {id, function, created}) so a saved notebook carries it.
 * No JupyterLab imports, so the unit tests run in plain Node; index.ts wires it to the cells.
 */

export const CALL_MIME = 'application/vnd.jupyter-gpu.call+json';
export const CELL_KEY = 'jupyter_gpu'; // the cell metadata key; `calls` inside it
export const MAX_CALLS = 200; // per cell, newest kept: a loop of spawns in one cell must not grow a notebook without end

// the backend's ids are `fc-` + hex; a notebook is untrusted input, and the id is pasted into code
const ID_RE = /^fc-[A-Za-z0-9_-]{1,64}$/;

export interface ICallData {
  id: string;
  function: string;
  created: number | null;
}

/** The call in an output's data (an object, or its JSON text); null when it holds no valid one. */
export function callOf(value: unknown): ICallData | null {
  let v = value;
  if (typeof v === 'string') {
    try {
      v = JSON.parse(v);
    } catch {
      return null;
    }
  }
  if (!v || typeof v !== 'object') {
    return null;
  }
  const d = v as { id?: unknown; function?: unknown; created?: unknown };
  if (typeof d.id !== 'string' || !ID_RE.test(d.id)) {
    return null;
  }
  return {
    id: d.id,
    function: typeof d.function === 'string' ? d.function : '',
    created: typeof d.created === 'number' && isFinite(d.created) ? d.created : null
  };
}

/** The code that gets the call back in any kernel of the same user. */
export function callHint(id: string): string {
  return `jupyter_gpu.FunctionCall.from_id('${id}')`;
}

/**
 * The cell's new `jupyter_gpu` metadata with `calls` added (its other keys kept, no id twice, the
 * newest MAX_CALLS kept), or null when every call is already recorded: nothing to write, so a
 * re-rendered output does not make the notebook dirty.
 */
export function withCalls(meta: unknown, calls: ICallData[]): Record<string, unknown> | null {
  const base: Record<string, unknown> = meta && typeof meta === 'object' && !Array.isArray(meta) ? { ...(meta as object) } : {};
  const known: ICallData[] = (Array.isArray(base.calls) ? base.calls : [])
    .map(callOf)
    .filter((c: ICallData | null): c is ICallData => c !== null);
  const ids = new Set(known.map(c => c.id));
  const added = calls.filter(c => !ids.has(c.id) && ids.add(c.id));
  if (!added.length) {
    return null;
  }
  base.calls = [...known, ...added].slice(-MAX_CALLS);
  return base;
}

/** Fill `node` with the call's line: the function, its id, and the code that gets it back. */
export function renderCall(node: HTMLElement, d: ICallData | null): void {
  node.textContent = '';
  node.classList.add('jp-gpu-call');
  const doc = node.ownerDocument;
  const part = (cls: string, text: string, tag = 'span'): HTMLElement => {
    const e = doc.createElement(tag);
    e.className = `jp-gpu-call-${cls}`;
    e.textContent = text;
    node.appendChild(e);
    return e;
  };
  if (!d) {
    part('function', 'spawned call (no valid id in this output)');
    return;
  }
  part('label', 'spawned');
  part('function', d.function || '?');
  const id = part('id', d.id);
  if (d.created !== null) {
    id.title = `created ${new Date(d.created * 1000).toLocaleString()}`;
  }
  const hint = part('hint', callHint(d.id), 'code');
  hint.title = 'the call, from any kernel: .get() waits for its value';
}
