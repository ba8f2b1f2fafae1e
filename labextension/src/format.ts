/**
 * Pure formatting of the cell footer (`application/vnd.jupyter-gpu.execution+json`).
 * No JupyterLab imports here, so the unit tests run in plain Node.
 */

export const MIME = 'application/vnd.jupyter-gpu.execution+json';

export interface IFooterTimings {
  queue?: number;
  cold_start?: number;
  load?: number;
  exec?: number;
  post?: number;
  run?: number;
  wall?: number;
  build?: number; // its jupyter_gpu.Image's build (%%gpu --pip, --image IMG), when it was built for this cell
}

export interface IFooterData {
  version?: number;
  live?: boolean;
  // live status
  phase?: string;
  elapsed?: number;
  position?: number | null;
  detail?: string; // what a cold start waits for (a Ray actor no node has room for yet)
  // final footer
  status?: string;
  gpu?: string | null;
  device?: string | null;
  worker?: string | null;
  cold?: boolean;
  start_method?: string | null;
  image?: string | null; // the worker image (%%gpu --image); shown only when not "default"
  timings?: IFooterTimings;
  billed_seconds?: number;
  cost_usd?: number;
  dedicated_usd?: number;
  price?: {
    provider?: string;
    as_of?: string;
    note?: string;
    serverless_per_s?: number;
    dedicated_per_h?: number;
    cores?: number | null; // a per-core price (the cpu device), sized by the worker's cores
    basis?: string; // what was priced: "cpu (2 cores) at Modal CPU list price 2026-10-04"
  };
  keep_warm_idle_s?: number; // keep-warm idle this cell ended, billed in its cost
  // sampled from NVML on the worker while the cell ran (absent on cpu workers)
  telemetry?: { peak_memory_bytes?: number; mean_utilisation?: number; samples?: number };
  // the notebook's directory, synced to a worker that cannot see it: files in, out, bytes both ways
  files?: { in: number; out: number; bytes: number };
  calls?: number; // the function calls (@jupyter_gpu.function) a cell made, summed into its one footer
}

export interface IPart {
  key: string;
  text: string;
  title?: string;
}

export function seconds(x: number | undefined | null): string {
  const v = Number(x) || 0;
  if (v < 1) {
    return `${(v * 1000).toFixed(1)} ms`;
  }
  if (v < 120) {
    return `${v.toFixed(2)} s`;
  }
  const m = Math.floor(v / 60);
  return `${m}m ${Math.round(v - m * 60)}s`;
}

export function usd(x: number | undefined | null): string {
  const v = Number(x) || 0;
  if (v === 0) {
    return '$0';
  }
  return v < 0.01 ? `$${v.toFixed(6)}` : `$${v.toFixed(4)}`;
}

export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function phaseLabel(phase: string | undefined, position?: number | null): string {
  const p = (phase || 'running').replace(/_/g, ' ');
  return position ? `${p} #${position}` : p;
}

export function peakMemory(d: IFooterData): number | undefined {
  const v = d.telemetry?.peak_memory_bytes;
  return typeof v === 'number' && v > 0 ? v : undefined;
}

/** The footer as labelled parts, in display order. */
export function footerParts(d: IFooterData): IPart[] {
  if (d.live) {
    return [
      { key: 'phase', text: phaseLabel(d.phase, d.position) },
      { key: 'gpu', text: `on ${d.gpu ?? '?'}` },
      { key: 'elapsed', text: seconds(d.elapsed) },
      ...(d.detail ? [{ key: 'detail', text: d.detail }] : [])
    ];
  }
  const t = d.timings || {};
  const parts: IPart[] = [];
  if (d.status && d.status !== 'ok') {
    parts.push({ key: 'status', text: d.status });
  }
  parts.push({
    key: 'start',
    text: d.cold ? `cold start ${seconds(t.cold_start)}` : 'warm',
    title: d.start_method ? `start method: ${d.start_method}` : undefined
  });
  if (t.build) {
    parts.push({ key: 'build', text: `build ${seconds(t.build)}` });
  }
  if (t.queue) {
    parts.push({ key: 'queue', text: `queued ${seconds(t.queue)}` });
  }
  if (d.calls) {
    parts.push({ key: 'calls', text: `${d.calls} function call${d.calls === 1 ? '' : 's'}` });
  }
  parts.push({ key: 'wall', text: `wall ${seconds(t.wall)}` });
  const price = d.price || {};
  // a cpu worker's seconds are not GPU-seconds: nothing may pretend the CPU is a GPU
  const unit = d.gpu === 'cpu' || price.cores ? 'worker-s' : 'GPU-s';
  const idle = d.keep_warm_idle_s ? ` incl. ${seconds(d.keep_warm_idle_s)} keep-warm idle` : '';
  parts.push({ key: 'gpu-seconds', text: `${(d.billed_seconds ?? 0).toFixed(3)} ${unit}${idle}` });
  const source = (price.serverless_per_s ? price.basis : '') || price.note || [price.provider, price.as_of].filter(Boolean).join(' ');
  parts.push({
    key: 'cost',
    text: `${usd(d.cost_usd)} vs ${usd(d.dedicated_usd)} dedicated`,
    title: source
  });
  // the device, with what it was priced at when a price names it ("cpu (2 cores) at Modal CPU list
  // price 2026-10-04"): said once, not the device twice
  const device = d.device || d.gpu || '?';
  const basis = price.basis && price.serverless_per_s ? price.basis : '';
  parts.push({
    key: 'device',
    text: basis.startsWith(device) ? basis : basis ? `${device} · ${basis}` : device,
    title: d.worker ? `worker ${d.worker}` : undefined
  });
  if (d.image && d.image !== 'default') {
    parts.push({ key: 'image', text: `image ${d.image}` });
  }
  const peak = peakMemory(d);
  if (peak !== undefined) {
    parts.push({ key: 'memory', text: `peak ${bytes(peak)}` });
  }
  const util = d.telemetry?.mean_utilisation;
  if (peak !== undefined && typeof util === 'number') {
    parts.push({ key: 'utilization', text: `${Math.round(util * 100)}% busy` });
  }
  if (d.files) {
    const f = d.files;
    parts.push({
      key: 'files',
      text: `synced ${f.in} file${f.in === 1 ? '' : 's'} in, ${f.out} out, ${bytes(f.bytes)}`,
      title: "the notebook's directory, to a worker that cannot see it"
    });
  }
  return parts;
}

/** Fill `node` with the footer (used by the mime renderer; plain DOM so it is unit-testable). */
export function renderFooter(node: HTMLElement, d: IFooterData): void {
  node.textContent = '';
  node.classList.add('jp-gpu-footer');
  node.classList.toggle('jp-gpu-footer-live', !!d.live);
  node.dataset.status = d.live ? 'live' : d.status || 'ok';
  const icon = node.ownerDocument.createElement('span');
  icon.className = 'jp-gpu-footer-icon';
  icon.textContent = 'gpu'; // live: pulses (CSS); no emoji, which headless fonts may lack
  node.appendChild(icon);
  for (const part of footerParts(d)) {
    const span = node.ownerDocument.createElement('span');
    span.className = `jp-gpu-footer-part jp-gpu-footer-${part.key}`;
    span.textContent = part.text;
    if (part.title) {
      span.title = part.title;
    }
    node.appendChild(span);
  }
}
