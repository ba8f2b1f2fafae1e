/**
 * @jest-environment jsdom
 */
import { MIME, footerParts, renderFooter, seconds, usd } from '../src/format';

const footer = {
  version: 1,
  status: 'ok',
  gpu: 'H100',
  device: 'NVIDIA H100 80GB HBM3',
  worker: 'w-1',
  cold: true,
  start_method: 'fork',
  timings: { queue: 0, cold_start: 0.048, load: 0.01, exec: 3.2, post: 0.001, run: 3.25, wall: 3.4 },
  billed_seconds: 3.298,
  cost_usd: 0.003618,
  dedicated_usd: 0.006498,
  price: { provider: 'Modal', as_of: '2026-10-04', note: '' },
  telemetry: { peak_memory_bytes: 3 * 1024 ** 3, mean_utilisation: 0.87, samples: 64 }
};

describe('footer renderer', () => {
  it('uses the mime type the kernel publishes', () => {
    expect(MIME).toBe('application/vnd.jupyter-gpu.execution+json');
  });

  it('formats seconds and dollars like the text footer', () => {
    expect(seconds(0.0481)).toBe('48.1 ms');
    expect(seconds(3.4)).toBe('3.40 s');
    expect(seconds(185)).toBe('3m 5s');
    expect(usd(0.003618)).toBe('$0.003618');
    expect(usd(1.5)).toBe('$1.5000');
    expect(usd(0)).toBe('$0');
  });

  it('renders a final footer: start, wall, GPU-seconds, cost vs dedicated, device, peak memory', () => {
    const node = document.createElement('div');
    renderFooter(node, footer);
    const text = (cls: string) => node.querySelector(`.jp-gpu-footer-${cls}`)?.textContent;
    expect(text('start')).toBe('cold start 48.0 ms');
    expect(text('wall')).toBe('wall 3.40 s');
    expect(text('gpu-seconds')).toBe('3.298 GPU-s');
    expect(text('cost')).toBe('$0.003618 vs $0.006498 dedicated');
    expect(node.querySelector('.jp-gpu-footer-cost')?.getAttribute('title')).toBe('Modal 2026-10-04');
    expect(text('device')).toBe('NVIDIA H100 80GB HBM3');
    expect(text('memory')).toBe('peak 3.0 GiB');
    expect(text('utilization')).toBe('87% busy');
    expect(node.dataset.status).toBe('ok');
    expect(node.classList.contains('jp-gpu-footer-live')).toBe(false);
  });

  it('renders a cpu worker as cpu: worker-seconds, keep-warm idle, and the CPU list price it used', () => {
    const cpu = {
      ...footer, gpu: 'cpu', device: 'cpu (2 cores)', telemetry: undefined, keep_warm_idle_s: 0.54,
      price: { provider: 'Modal', as_of: '2026-10-04', serverless_per_s: 0.0000262, cores: 2,
               basis: 'cpu (2 cores) at Modal CPU list price 2026-10-04' }
    };
    const node = document.createElement('div');
    renderFooter(node, cpu);
    const text = (cls: string) => node.querySelector(`.jp-gpu-footer-${cls}`)?.textContent;
    expect(text('gpu-seconds')).toBe('3.298 worker-s incl. 540.0 ms keep-warm idle');
    expect(text('device')).toBe('cpu (2 cores) at Modal CPU list price 2026-10-04');
    expect(node.textContent?.split('cpu (2 cores)').length).toBe(2); // the device said once
    expect(node.textContent).not.toContain('GPU-s');
  });

  it('names a worker image other than default, and only then', () => {
    const keys = (d: object) => footerParts(d).map(p => p.key);
    expect(keys(footer)).not.toContain('image');
    expect(keys({ ...footer, image: 'default' })).not.toContain('image');
    const part = footerParts({ ...footer, image: 'train' }).find(p => p.key === 'image');
    expect(part?.text).toBe('image train');
  });

  it('says how many function calls a footer sums', () => {
    expect(footerParts(footer).map(p => p.key)).not.toContain('calls');
    expect(footerParts({ ...footer, calls: 3 }).find(p => p.key === 'calls')?.text).toBe('3 function calls');
    expect(footerParts({ ...footer, calls: 1 }).find(p => p.key === 'calls')?.text).toBe('1 function call');
  });

  it('says what a synced directory moved, and nothing when nothing did', () => {
    expect(footerParts(footer).map(p => p.key)).not.toContain('files');
    const part = footerParts({ ...footer, files: { in: 3, out: 1, bytes: 4.2 * 1024 ** 2 } }).find(p => p.key === 'files');
    expect(part?.text).toBe('synced 3 files in, 1 out, 4.2 MiB');
  });

  it('renders the live status line with its phase and queue position, then replaces it in place', () => {
    const node = document.createElement('div');
    renderFooter(node, { version: 1, live: true, phase: 'queued', gpu: 'A100', elapsed: 2.5, position: 3 });
    expect(node.querySelector('.jp-gpu-footer-phase')?.textContent).toBe('queued #3');
    expect(node.classList.contains('jp-gpu-footer-live')).toBe(true);
    renderFooter(node, { version: 1, live: true, phase: 'cold_start', gpu: 'A100', elapsed: 3.5, position: null });
    expect(node.querySelector('.jp-gpu-footer-phase')?.textContent).toBe('cold start');
    expect(node.querySelectorAll('.jp-gpu-footer-phase').length).toBe(1);
    expect(node.querySelector('.jp-gpu-footer-detail')).toBeNull();
    const why = 'waiting for Ray to place the worker: it needs 0.5 CPU; free in the cluster: 0 CPU';
    renderFooter(node, { version: 1, live: true, phase: 'cold_start', gpu: 'A100', elapsed: 9, detail: why });
    expect(node.querySelector('.jp-gpu-footer-detail')?.textContent).toBe(why);
    renderFooter(node, footer);
    expect(node.querySelector('.jp-gpu-footer-detail')).toBeNull();
    expect(node.classList.contains('jp-gpu-footer-live')).toBe(false);
    expect(node.querySelector('.jp-gpu-footer-phase')).toBeNull();
  });

  it('names a failed or interrupted cell, a warm start, and leaves out what was not measured', () => {
    const parts = footerParts({ ...footer, status: 'interrupted', cold: false, telemetry: undefined });
    const keys = parts.map(p => p.key);
    expect(keys[0]).toBe('status');
    expect(parts[0].text).toBe('interrupted');
    expect(parts.find(p => p.key === 'start')?.text).toBe('warm');
    expect(keys).not.toContain('memory');
    expect(keys).not.toContain('queue');
  });

  it('shows the price note (e.g. the cpu device has no price) instead of a provider', () => {
    const parts = footerParts({ ...footer, cost_usd: 0, dedicated_usd: 0, price: { note: 'no price configured for the cpu device' } });
    const cost = parts.find(p => p.key === 'cost');
    expect(cost?.text).toBe('$0 vs $0 dedicated');
    expect(cost?.title).toBe('no price configured for the cpu device');
  });
});
