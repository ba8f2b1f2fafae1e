/** The GPU sidebar: device picker with prices, keep-warm, workers, queue, session cost, actions. */
import { ISessionContext } from '@jupyterlab/apputils';
import { NotebookPanel } from '@jupyterlab/notebook';
import { Widget } from '@lumino/widgets';

import {
  DEFAULT_IMAGE,
  IChoice,
  IState,
  configCode,
  costText,
  formatCountdown,
  keepWarmLeft,
  perHour,
  pickerRows,
  workerLabel
} from './model';

export interface ISidebarHost {
  current(): NotebookPanel | null;
  choice(panel: NotebookPanel): IChoice;
  /** Store the choice in the notebook and apply it to its kernel; false: no kernel yet (applied when it starts). */
  setChoice(panel: NotebookPanel, choice: IChoice): Promise<boolean>;
  action(panel: NotebookPanel, action: 'prewarm' | 'release'): Promise<void>;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls?: string, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls) {
    e.className = cls;
  }
  if (text !== undefined) {
    e.textContent = text;
  }
  return e;
}

export class GpuSidebar extends Widget {
  constructor(host: ISidebarHost) {
    super();
    this.host = host;
    this.id = 'jupyter-gpu-sidebar';
    this.addClass('jp-gpu-sidebar');
    this.title.caption = 'GPU';
    const n = this.node;
    n.appendChild(el('h2', 'jp-gpu-title', 'GPU'));
    this.notebookLabel = n.appendChild(el('div', 'jp-gpu-notebook'));
    n.appendChild(el('h3', undefined, 'Device type'));
    this.picker = n.appendChild(el('table', 'jp-gpu-picker'));
    const im = n.appendChild(el('label', 'jp-gpu-image', 'Worker image '));
    this.image = im.appendChild(el('select', 'jp-gpu-image-select'));
    this.image.title = "the backend's worker images ([images.NAME] in its config): each has its own workers";
    this.image.addEventListener('change', () =>
      void this.choose({ image: this.image.value === DEFAULT_IMAGE ? '' : this.image.value })
    );
    const kw = n.appendChild(el('label', 'jp-gpu-keepwarm', 'Keep warm '));
    this.keepWarm = kw.appendChild(el('input', 'jp-gpu-keepwarm-input'));
    this.keepWarm.placeholder = '5m';
    this.keepWarm.title = 'how long an idle worker stays leased to this notebook (30s, 5m, 1h)';
    this.keepWarm.addEventListener('change', () => void this.choose({ keep_warm: this.keepWarm.value.trim() }));
    this.minWarm = n.appendChild(el('div', 'jp-gpu-minwarm'));
    const buttons = n.appendChild(el('div', 'jp-gpu-buttons'));
    this.prewarmButton = buttons.appendChild(el('button', 'jp-mod-styled jp-mod-accept jp-gpu-prewarm', 'Pre-warm'));
    this.releaseButton = buttons.appendChild(el('button', 'jp-mod-styled jp-mod-warn jp-gpu-release', 'Release'));
    this.prewarmButton.addEventListener('click', () => void this.act('prewarm'));
    this.releaseButton.addEventListener('click', () => void this.act('release'));
    this.message = n.appendChild(el('div', 'jp-gpu-message'));
    n.appendChild(el('h3', undefined, 'Workers'));
    this.workers = n.appendChild(el('table', 'jp-gpu-workers'));
    n.appendChild(el('h3', undefined, 'Queue'));
    this.queue = n.appendChild(el('div', 'jp-gpu-queue'));
    n.appendChild(el('h3', undefined, 'Session cost'));
    this.cost = n.appendChild(el('div', 'jp-gpu-cost'));
    this.backendLine = n.appendChild(el('div', 'jp-gpu-backend'));
  }

  /** New state from the server extension (or an error). */
  update_(state: IState | null, error: string | null): void {
    this.state = state;
    this.fetchedAt = Date.now();
    this.error = error;
    this.render();
  }

  /** The keep-warm countdown, between polls. */
  tick(): void {
    if (this.state && this.isVisible) {
      this.renderWorkers();
    }
  }

  notify(text: string, isError = false): void {
    this.message.textContent = text;
    this.message.classList.toggle('jp-gpu-error', isError);
  }

  render(): void {
    const panel = this.host.current();
    const choice = panel ? this.host.choice(panel) : {};
    this.notebookLabel.textContent = panel ? `Notebook: ${panel.context.path}` : 'Open a notebook to choose its device.';
    const disabled = !panel;
    this.prewarmButton.disabled = disabled;
    this.releaseButton.disabled = disabled;
    if (document.activeElement !== this.keepWarm) {
      this.keepWarm.value = choice.keep_warm ?? '';
    }
    this.renderPicker(choice, disabled);
    this.renderImages(choice, disabled);
    const b = this.state?.backend;
    this.minWarm.textContent = b && b.min_warm !== undefined && b.min_warm !== null
      ? `min_warm: ${b.min_warm} per type (backend setting)${b.warm_pool && Object.keys(b.warm_pool).length ? ` · spares ${JSON.stringify(b.warm_pool)}` : ''}`
      : '';
    this.renderWorkers();
    this.renderQueue();
    const c = this.state?.cost;
    this.cost.textContent = c
      ? `${costText(c.usd)} serverless vs ${costText(c.dedicated_usd)} dedicated · ${c.gpu_seconds.toFixed(2)} ${c.seconds_unit ?? 'GPU-s'}` +
        (c.keep_warm_idle_s ? ` incl. ${c.keep_warm_idle_s.toFixed(1)} s keep-warm idle` : '') +
        ` · ${c.cells} cell${c.cells === 1 ? '' : 's'}${c.running ? ` (${c.running} running)` : ''}`
      : '—';
    this.cost.dataset.usd = c ? String(c.usd) : '';
    this.cost.dataset.dedicatedUsd = c ? String(c.dedicated_usd) : '';
    this.cost.dataset.idleS = c ? String(c.keep_warm_idle_s ?? 0) : '';
    this.cost.dataset.cells = c ? String(c.cells) : '';
    this.backendLine.textContent = this.error
      ? this.error
      : b
        ? b.source === 'none'
          ? 'backend: not started yet (the first %%gpu cell or Pre-warm starts it)'
          : `backend: ${b.runtime ?? '?'} runtime (${b.source})${b.error ? ` · ${b.error}` : ''}`
        : 'backend: …';
    this.backendLine.classList.toggle('jp-gpu-error', !!this.error || !!b?.error);
  }

  private renderPicker(choice: IChoice, disabled: boolean): void {
    const rows = pickerRows(this.state);
    this.picker.textContent = '';
    const head = this.picker.appendChild(el('tr'));
    for (const h of ['', 'type', 'serverless', 'dedicated']) {
      head.appendChild(el('th', undefined, h));
    }
    for (const r of rows) {
      const tr = this.picker.appendChild(el('tr', 'jp-gpu-type'));
      tr.dataset.gpu = r.gpu;
      if (r.offered === false) {
        tr.classList.add('jp-gpu-not-offered');
        tr.title = 'not offered by this backend';
      } else if (r.note) {
        tr.title = r.note;
      }
      const radio = el('input');
      radio.type = 'radio';
      radio.name = 'jp-gpu-type';
      radio.value = r.gpu;
      radio.disabled = disabled;
      radio.checked = choice.gpu === r.gpu;
      radio.addEventListener('change', () => void this.choose({ gpu: r.gpu }));
      tr.appendChild(el('td')).appendChild(radio);
      const name = tr.appendChild(el('td', 'jp-gpu-type-name', r.gpu));
      name.addEventListener('click', () => {
        if (!radio.disabled) {
          radio.checked = true;
          void this.choose({ gpu: r.gpu });
        }
      });
      tr.appendChild(el('td', 'jp-gpu-price-serverless', perHour(r.serverless_per_h)));
      tr.appendChild(el('td', 'jp-gpu-price-dedicated', perHour(r.dedicated_per_h)));
    }
  }

  /** The image picker: the backend's images; a chosen one it lacks stays listed, marked. */
  private renderImages(choice: IChoice, disabled: boolean): void {
    const have = this.state?.backend?.images ?? [];
    const names = [DEFAULT_IMAGE, ...have.filter(n => n !== DEFAULT_IMAGE)];
    const chosen = choice.image || DEFAULT_IMAGE;
    if (!names.includes(chosen)) {
      names.push(chosen);
    }
    this.image.textContent = '';
    for (const name of names) {
      const o = this.image.appendChild(el('option', undefined, name));
      o.value = name;
      if (this.state && !have.includes(name) && name !== DEFAULT_IMAGE) {
        o.textContent = `${name} (not on this backend)`;
      }
    }
    this.image.value = chosen;
    this.image.disabled = disabled || names.length < 2;
  }

  private renderWorkers(): void {
    const ws = this.state?.workers ?? [];
    this.workers.textContent = '';
    if (!ws.length) {
      this.workers.appendChild(el('tr')).appendChild(el('td', 'jp-gpu-empty', 'none'));
      return;
    }
    const elapsed = Date.now() - this.fetchedAt;
    for (const w of ws) {
      const tr = this.workers.appendChild(el('tr', 'jp-gpu-worker'));
      tr.dataset.state = w.state;
      tr.dataset.gpu = w.gpu;
      tr.appendChild(el('td', 'jp-gpu-worker-gpu', workerLabel(w)));
      tr.appendChild(el('td', 'jp-gpu-worker-state', w.state));
      tr.appendChild(el('td', 'jp-gpu-worker-countdown', formatCountdown(keepWarmLeft(w, elapsed)))).title =
        `keep-warm window ${Math.round(w.keep_warm)} s`;
      tr.appendChild(el('td', 'jp-gpu-worker-device', w.device)).title = w.worker;
    }
  }

  private renderQueue(): void {
    const q = this.state?.queued ?? [];
    this.queue.textContent = q.length ? '' : 'empty';
    for (const c of q) {
      this.queue.appendChild(
        el('div', 'jp-gpu-queued', `${c.gpu}: ${c.position ? `#${c.position} in line` : 'starting a worker'}`)
      ).title = `cell ${c.cell}`;
    }
  }

  private async choose(change: IChoice): Promise<void> {
    const panel = this.host.current();
    if (!panel) {
      return;
    }
    const next = { ...this.host.choice(panel), ...change };
    if (change.keep_warm !== undefined && change.keep_warm !== '' && configCode({ keep_warm: change.keep_warm }) === null) {
      this.notify(`not a duration: ${change.keep_warm} (use 30s, 5m, 1h)`, true);
      return;
    }
    if (change.keep_warm === '') {
      delete next.keep_warm;
    }
    // an image set back to the default stays '' in the choice, so the kernel is told (--image default)
    try {
      const image = next.image ? `, image ${next.image}` : '';
      const what = `${next.gpu ?? 'backend default'}, keep warm ${next.keep_warm || 'default'}${image}`;
      const now = await this.host.setChoice(panel, next);
      this.notify(now ? `applied: ${what}` : `saved: ${what} (applies when the kernel starts)`);
    } catch (e) {
      this.notify(String((e as Error).message ?? e), true);
    }
    this.render();
  }

  private async act(action: 'prewarm' | 'release'): Promise<void> {
    const panel = this.host.current();
    if (!panel) {
      return;
    }
    this.notify(action === 'prewarm' ? 'pre-warming…' : 'releasing…');
    try {
      await this.host.action(panel, action);
      this.notify(action === 'prewarm' ? 'pre-warmed' : 'released');
    } catch (e) {
      this.notify(String((e as Error).message ?? e), true);
    }
  }

  readonly host: ISidebarHost;
  private state: IState | null = null;
  private error: string | null = null;
  private fetchedAt = 0;
  private notebookLabel: HTMLDivElement;
  private picker: HTMLTableElement;
  private keepWarm: HTMLInputElement;
  private image: HTMLSelectElement;
  private minWarm: HTMLDivElement;
  private prewarmButton: HTMLButtonElement;
  private releaseButton: HTMLButtonElement;
  private message: HTMLDivElement;
  private workers: HTMLTableElement;
  private queue: HTMLDivElement;
  private cost: HTMLDivElement;
  private backendLine: HTMLDivElement;
}

/** Run code in the kernel without output in the notebook; reject with the error it raised. */
export async function runSilently(ctx: ISessionContext, code: string): Promise<string> {
  const kernel = ctx.session?.kernel;
  if (!kernel) {
    throw new Error('the notebook has no kernel');
  }
  const future = kernel.requestExecute({ code, silent: true, store_history: false, allow_stdin: false });
  let out = '';
  future.onIOPub = msg => {
    if (msg.header.msg_type === 'stream') {
      out += (msg.content as { text: string }).text;
    }
  };
  const reply = await future.done;
  const content = reply.content as { status: string; ename?: string; evalue?: string };
  if (content.status !== 'ok') {
    throw new Error(`${content.ename ?? 'error'}: ${content.evalue ?? ''}`.trim());
  }
  return out.trim();
}
