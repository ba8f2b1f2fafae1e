/**
 * The sidebar's model: what the server extension reports, the notebook's choice, and the code the
 * sidebar runs in the kernel.  No JupyterLab imports, so the unit tests run in plain Node.
 */

export const METADATA_KEY = 'jupyter_gpu';

export interface ICatalogEntry {
  gpu: string;
  serverless_per_h: number;
  dedicated_per_h: number;
  provider?: string;
  as_of?: string;
  note?: string;
  offered?: boolean;
}

export interface IWorker {
  session: string;
  gpu: string;
  device: string;
  worker: string;
  state: string;
  keep_warm: number;
  keep_warm_left: number | null;
  image?: string | null; // its worker image (%%gpu --image); absent from older backends
}

export interface IQueued {
  session: string;
  cell: string;
  gpu: string;
  position: number | null;
}

export interface ICost {
  usd: number;
  dedicated_usd: number;
  gpu_seconds: number; // billed seconds, keep-warm idle included
  cells: number;
  running: number;
  keep_warm_idle_s?: number; // billed keep-warm idle so far (between cells, and accruing now)
  keep_warm_idle_usd?: number;
  seconds_unit?: string; // "worker-s" on the cpu device (never called GPU time), else "GPU-s"
}

export interface IBackendInfo {
  source: string; // "configured" | "embedded" | "none"
  url?: string | null;
  runtime?: string | null;
  offers?: string[];
  images?: string[]; // the backend's worker images ("default" and its [images.NAME])
  min_warm?: number | null;
  warm_pool?: Record<string, number>;
  error?: string | null;
}

export interface IState {
  backend: IBackendInfo;
  catalog: ICatalogEntry[];
  sessions: string[];
  workers: IWorker[];
  queued: IQueued[];
  cost: ICost;
}

/** The notebook's choice, stored in `metadata.jupyter_gpu` (CI reads it too). */
export interface IChoice {
  gpu?: string;
  keep_warm?: string; // "5m", "30s", "1h" or seconds
  image?: string; // a worker image the backend names ([images.NAME]); absent: the default one
}

export const DEFAULT_IMAGE = 'default';
const IMAGE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/; // jupyter_gpu/_wire/pools.py NAME_RE

export function validImage(name: string | undefined | null): boolean {
  return typeof name === 'string' && IMAGE_NAME.test(name);
}

const GPU_SPEC = /^[A-Za-z0-9][A-Za-z0-9_.:\-]*(,[A-Za-z0-9][A-Za-z0-9_.:\-]*)*$/;
const DURATION = /^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$/;

export function validGpu(spec: string | undefined | null): boolean {
  return !!spec && spec.length <= 200 && GPU_SPEC.test(spec);
}

/** Seconds in "300", "30s", "5m", "1h" (the magic's syntax); null when not a duration. */
export function parseDuration(text: string | number | undefined | null): number | null {
  if (typeof text === 'number') {
    return Number.isFinite(text) && text >= 0 ? text : null;
  }
  const m = DURATION.exec(String(text ?? ''));
  if (!m) {
    return null;
  }
  const unit: Record<string, number> = { '': 1, s: 1, m: 60, h: 3600 };
  return parseFloat(m[1]) * unit[m[2]];
}

export function formatCountdown(s: number | null): string {
  if (s === null) {
    return '—'; // busy: the window starts when the cell ends
  }
  const v = Math.max(0, Math.round(s));
  const m = Math.floor(v / 60);
  return m ? `${m}:${String(v % 60).padStart(2, '0')}` : `${v} s`;
}

export function perHour(x: number): string {
  if (!x) {
    return '—';
  }
  return x < 1 ? `$${x.toFixed(3)}/h` : `$${x.toFixed(2)}/h`;
}

export function costText(usd: number): string {
  if (!usd) {
    return '$0.00';
  }
  return usd < 0.01 ? `$${usd.toFixed(5)}` : `$${usd.toFixed(4)}`;
}

/** Catalog rows for the picker: types the backend offers first, then the rest of the catalog. */
export function pickerRows(state: Pick<IState, 'catalog' | 'backend'> | null): ICatalogEntry[] {
  if (!state) {
    return [];
  }
  const offers = state.backend.offers || [];
  const byGpu = new Map(state.catalog.map(e => [e.gpu, e]));
  const rows: ICatalogEntry[] = [];
  for (const gpu of offers) {
    const e = byGpu.get(gpu);
    rows.push({ ...(e || { gpu, serverless_per_h: 0, dedicated_per_h: 0, note: 'not in the price catalog' }), offered: true });
  }
  for (const e of state.catalog) {
    if (!offers.includes(e.gpu)) {
      rows.push({ ...e, offered: offers.length === 0 ? undefined : false });
    }
  }
  return rows;
}

/** What the pool table calls a worker: its GPU type, and its image unless it is the default one
 * (a notebook may hold one worker per GPU type and image). */
export function workerLabel(w: IWorker): string {
  return w.image && w.image !== 'default' ? `${w.gpu} · ${w.image}` : w.gpu;
}

/** Seconds left in a worker's keep-warm window, `elapsedMs` after the state was fetched. */
export function keepWarmLeft(w: IWorker, elapsedMs: number): number | null {
  if (w.keep_warm_left === null || w.keep_warm_left === undefined) {
    return null;
  }
  return Math.max(0, w.keep_warm_left - elapsedMs / 1000);
}

/** The session ids the backend gives a kernel start with the kernel id's first 8 characters. */
export function sessionPrefix(kernelId: string): string {
  return `${kernelId.slice(0, 8)}-`;
}

/**
 * Python that applies a choice to the kernel at once, without output in the notebook.
 * Only validated values go in, as JSON string literals (the metadata comes from a file that may
 * not be trusted).
 */
export function configCode(choice: IChoice, backend?: { url?: string; token?: string }): string | null {
  const args: string[] = [];
  if (choice.gpu) {
    if (!validGpu(choice.gpu)) {
      return null;
    }
    args.push(`--gpu ${choice.gpu}`);
  }
  if (choice.keep_warm !== undefined && choice.keep_warm !== '') {
    const s = parseDuration(choice.keep_warm);
    if (s === null) {
      return null;
    }
    args.push(`--keep-warm ${s}`);
  }
  if (choice.image !== undefined) {
    // always said, the default too: a kernel that had a named image must be set back
    const image = choice.image || DEFAULT_IMAGE;
    if (!validImage(image)) {
      return null;
    }
    args.push(`--image ${image}`);
  }
  const lines = ["get_ipython().run_line_magic('load_ext', 'jupyter_gpu')"];
  if (backend?.url) {
    if (!/^https?:\/\/[^\s'"\\]+$/.test(backend.url) || /[\s'"\\]/.test(backend.token || '')) {
      return null;
    }
    const tok = backend.token ? ` --token ${backend.token}` : '';
    lines.push(`get_ipython().run_line_magic('gpu', ${JSON.stringify(`use ${backend.url}${tok}`)})`);
  }
  if (args.length) {
    lines.push(`get_ipython().run_line_magic('gpu', ${JSON.stringify(`config ${args.join(' ')}`)})`);
  }
  return lines.join('\n');
}

export function actionCode(action: 'prewarm' | 'release', choice: IChoice): string | null {
  let line: string = action;
  if (action === 'prewarm') {
    if (choice.gpu) {
      if (!validGpu(choice.gpu)) {
        return null;
      }
      line += ` --gpu ${choice.gpu}`;
    }
    const s = parseDuration(choice.keep_warm ?? '');
    if (s !== null && choice.keep_warm) {
      line += ` --keep-warm ${s}`;
    }
    if (choice.image) {
      if (!validImage(choice.image)) {
        return null;
      }
      line += ` --image ${choice.image}`;
    }
  }
  return (
    "get_ipython().run_line_magic('load_ext', 'jupyter_gpu')\n" +
    `get_ipython().run_line_magic('gpu', ${JSON.stringify(line)})`
  );
}

/** The choice from notebook metadata, dropping anything that is not a valid value. */
export function readChoice(meta: unknown): IChoice {
  const out: IChoice = {};
  if (meta && typeof meta === 'object') {
    const m = meta as Record<string, unknown>;
    if (typeof m.gpu === 'string' && validGpu(m.gpu)) {
      out.gpu = m.gpu;
    }
    if ((typeof m.keep_warm === 'string' || typeof m.keep_warm === 'number') && parseDuration(m.keep_warm) !== null) {
      out.keep_warm = String(m.keep_warm);
    }
    if (typeof m.image === 'string' && validImage(m.image) && m.image !== DEFAULT_IMAGE) {
      out.image = m.image;
    }
  }
  return out;
}

/**
 * The notebook's `metadata.jupyter_gpu` with this choice in it: other keys (e.g. `jupyter-gpu run`'s
 * `expect_failure`, `parameters`) are kept; a cleared field is removed.
 */
export function mergeChoice(meta: unknown, choice: IChoice): Record<string, unknown> {
  const out: Record<string, unknown> = meta && typeof meta === 'object' && !Array.isArray(meta) ? { ...(meta as object) } : {};
  for (const key of ['gpu', 'keep_warm', 'image'] as const) {
    if (choice[key]) {
      out[key] = choice[key];
    } else {
      delete out[key];
    }
  }
  return out;
}
