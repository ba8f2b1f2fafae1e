/** jupyter-gpu for JupyterLab: the GPU sidebar and a status-bar item with the session's cost. */
import { ILabShell, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { IBackendOverride, fetchState } from './api';
import { IChoice, METADATA_KEY, actionCode, configCode, costText, mergeChoice, readChoice } from './model';
import { recordCalls } from './record';
import { GpuSidebar, ISidebarHost, runSilently } from './sidebar';

const PLUGIN_ID = 'jupyter-gpu:plugin';
const POLL_MS = 1000;

const gpuIcon = new LabIcon({
  name: 'jupyter-gpu:icon',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16"><g class="jp-icon3" fill="#616161">' +
    '<path d="M3 7h18v10H3zM5 9v6h14V9zM7 11h3v2H7zm5 0h5v2h-5zM4 17h2v3H4zm14 0h2v3h-2z"/></g></svg>'
});

interface ISettings {
  backendUrl: string;
  backendToken: string;
  defaultGpu: string;
  keepWarm: string;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'GPU sidebar, session cost in the status bar, per-notebook device choice',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ILabShell, ISettingRegistry, IStatusBar],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    labShell: ILabShell | null,
    registry: ISettingRegistry | null,
    statusBar: IStatusBar | null
  ) => {
    const settings: ISettings = { backendUrl: '', backendToken: '', defaultGpu: '', keepWarm: '' };
    const backend = (): IBackendOverride => (settings.backendUrl ? { url: settings.backendUrl, token: settings.backendToken } : {});
    const applied = new Map<string, string>(); // kernel id -> code last applied

    const choiceOf = (panel: NotebookPanel): IChoice => {
      const stored = readChoice(panel.model?.getMetadata(METADATA_KEY));
      return {
        gpu: stored.gpu ?? (settings.defaultGpu || undefined),
        keep_warm: stored.keep_warm ?? (settings.keepWarm || undefined),
        ...(stored.image ? { image: stored.image } : {})
      };
    };

    // `choice`: what the sidebar just set, when it differs from the stored one (an image set back
    // to the default is stored as nothing, yet the kernel must be told)
    const apply = async (panel: NotebookPanel, force = false, choice = choiceOf(panel)): Promise<boolean> => {
      const kernel = panel.sessionContext.session?.kernel;
      if (!kernel) {
        return false; // applied by watch() once the kernel is up
      }
      if (!choice.gpu && !choice.keep_warm && choice.image === undefined && !settings.backendUrl) {
        return true;
      }
      const code = configCode(choice, backend());
      if (code === null) {
        throw new Error('invalid device choice in the notebook metadata; pick one in the sidebar');
      }
      if (!force && applied.get(kernel.id) === code) {
        return true;
      }
      applied.set(kernel.id, code);
      console.debug(`jupyter-gpu: applying ${JSON.stringify(choice)} to kernel ${kernel.id}`);
      try {
        await runSilently(panel.sessionContext, code);
      } catch (e) {
        applied.delete(kernel.id);
        throw e;
      }
      return true;
    };

    const host: ISidebarHost = {
      current: () => tracker.currentWidget,
      choice: choiceOf,
      setChoice: async (panel, choice) => {
        await panel.context.ready; // before it, loading the file would replace the metadata
        const model = panel.model;
        if (!model) {
          throw new Error('the notebook is not loaded');
        }
        model.setMetadata(METADATA_KEY, mergeChoice(model.getMetadata(METADATA_KEY), choice));
        const now = choiceOf(panel);
        return apply(panel, true, choice.image === '' ? { ...now, image: '' } : now);
      },
      action: async (panel, action) => {
        await apply(panel);
        const code = actionCode(action, choiceOf(panel));
        if (code === null) {
          throw new Error('invalid device choice');
        }
        await runSilently(panel.sessionContext, code);
        void poll();
      }
    };

    const sidebar = new GpuSidebar(host);
    sidebar.title.icon = gpuIcon;
    app.shell.add(sidebar, 'right', { rank: 600 });

    // the status-bar item: the current notebook's session cost
    const costItem = new Widget();
    costItem.addClass('jp-gpu-status');
    costItem.node.title = 'jupyter-gpu: what this notebook\'s %%gpu cells have cost so far (click for the GPU sidebar)';
    costItem.node.addEventListener('click', () => app.shell.activateById(sidebar.id));
    if (statusBar) {
      statusBar.registerStatusItem('jupyter-gpu:cost', {
        item: costItem,
        align: 'left',
        rank: 5,
        isActive: () => !!tracker.currentWidget
      });
    }

    // apply the notebook's choice to its kernel when it starts or restarts
    const watch = (panel: NotebookPanel) => {
      const ctx = panel.sessionContext;
      panel.context.ready.then(() => {
        panel.model?.metadataChanged.connect((_, change) => {
          if (change.key === METADATA_KEY) {
            console.debug(`jupyter-gpu: metadata ${JSON.stringify(change.newValue)} in ${panel.context.path}`);
          }
        });
      });
      const tryApply = () => {
        if (ctx.session?.kernel && ctx.kernelDisplayStatus === 'idle') {
          apply(panel).catch(e => sidebar.notify(String(e.message ?? e), true));
        }
      };
      ctx.statusChanged.connect((_, status) => {
        if (status === 'restarting' || status === 'autorestarting' || status === 'starting') {
          const id = ctx.session?.kernel?.id;
          if (id) {
            applied.delete(id); // a restarted kernel has fresh defaults
          }
        }
        tryApply();
      });
      ctx.kernelChanged.connect(() => tryApply());
      void ctx.ready.then(tryApply);
    };
    tracker.widgetAdded.connect((_, panel) => watch(panel));
    tracker.forEach(watch);
    // a spawned call's id into its cell's metadata, so the saved notebook keeps it (record.ts)
    tracker.widgetAdded.connect((_, panel) => recordCalls(panel));
    tracker.forEach(recordCalls);
    tracker.currentChanged.connect(() => {
      sidebar.render();
      void poll();
    });

    let polling = false;
    const poll = async () => {
      if (polling) {
        return;
      }
      polling = true;
      const kernelId = tracker.currentWidget?.sessionContext.session?.kernel?.id ?? null;
      try {
        const state = await fetchState(kernelId);
        sidebar.update_(state, null);
        // named by what the session ran on: a CPU-only session's cost is not a GPU's
        const what = state.cost.seconds_unit === 'worker-s' ? 'cpu' : 'GPU';
        costItem.node.textContent = `${what} ${costText(kernelId ? state.cost.usd : 0)}`;
        costItem.node.dataset.usd = String(state.cost.usd);
      } catch (e) {
        sidebar.update_(null, String((e as Error).message ?? e));
        costItem.node.textContent = 'GPU ?';
      } finally {
        polling = false;
      }
    };
    void poll();
    setInterval(() => void poll(), POLL_MS);
    setInterval(() => sidebar.tick(), 250);

    if (registry) {
      void registry.load(PLUGIN_ID).then(s => {
        const read = () => {
          settings.backendUrl = (s.get('backendUrl').composite as string) || '';
          settings.backendToken = (s.get('backendToken').composite as string) || '';
          settings.defaultGpu = (s.get('defaultGpu').composite as string) || '';
          settings.keepWarm = (s.get('keepWarm').composite as string) || '';
          sidebar.render();
        };
        read();
        s.changed.connect(read);
      });
    }
    void labShell;
  }
};

export default plugin;
