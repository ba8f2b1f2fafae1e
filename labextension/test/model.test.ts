import {
  actionCode,
  configCode,
  formatCountdown,
  keepWarmLeft,
  mergeChoice,
  parseDuration,
  perHour,
  pickerRows,
  readChoice,
  sessionPrefix,
  validGpu,
  workerLabel
} from '../src/model';

const catalog = [
  { gpu: 'H100', serverless_per_h: 3.9492, dedicated_per_h: 6.88 },
  { gpu: 'A100', serverless_per_h: 2.0988, dedicated_per_h: 2.745 }
];

describe('sidebar model', () => {
  it('parses durations like the magic does', () => {
    expect(parseDuration('300')).toBe(300);
    expect(parseDuration('30s')).toBe(30);
    expect(parseDuration('5m')).toBe(300);
    expect(parseDuration('1.5h')).toBe(5400);
    expect(parseDuration('soon')).toBeNull();
    expect(parseDuration('-1')).toBeNull();
  });

  it('lists offered types first, with both prices, then the rest of the catalog', () => {
    const rows = pickerRows({ catalog, backend: { source: 'embedded', offers: ['cpu', 'A100'] } });
    expect(rows.map(r => r.gpu)).toEqual(['cpu', 'A100', 'H100']);
    expect(rows[0].offered).toBe(true);
    expect(rows[1].serverless_per_h).toBe(2.0988);
    expect(rows[2].offered).toBe(false);
    expect(perHour(rows[1].serverless_per_h)).toBe('$2.10/h');
    expect(perHour(rows[0].dedicated_per_h)).toBe('—');
  });

  it('builds the silent kernel code for a choice, quoting values as string literals', () => {
    const code = configCode({ gpu: 'cpu', keep_warm: '5m' });
    expect(code).toContain("run_line_magic('load_ext', 'jupyter_gpu')");
    expect(code).toContain(`run_line_magic('gpu', "config --gpu cpu --keep-warm 300")`);
    expect(configCode({ gpu: 'H100,A100,cpu' })).toContain('config --gpu H100,A100,cpu');
    expect(actionCode('prewarm', { gpu: 'cpu', keep_warm: '30s' })).toContain('"prewarm --gpu cpu --keep-warm 30"');
    expect(actionCode('release', { gpu: 'cpu' })).toContain('"release"');
  });

  it('refuses values from notebook metadata that could inject code', () => {
    expect(validGpu('cpu"); import os; os.system("x')).toBe(false);
    expect(configCode({ gpu: "cpu')\nimport os" })).toBeNull();
    expect(configCode({ keep_warm: '5m; rm' })).toBeNull();
    expect(readChoice({ gpu: 'x y', keep_warm: 'nope' })).toEqual({});
    expect(readChoice({ gpu: 'A100', keep_warm: '10m', other: 1 })).toEqual({ gpu: 'A100', keep_warm: '10m' });
    expect(readChoice('garbage')).toEqual({});
    expect(configCode({}, { url: "http://x/'+__import__('os')" })).toBeNull();
  });

  it('counts a worker keep-warm window down between polls; a busy worker has none', () => {
    const w = { session: 's', gpu: 'cpu', device: 'cpu', worker: 'w', state: 'idle', keep_warm: 300, keep_warm_left: 120 };
    expect(keepWarmLeft(w, 30_000)).toBe(90);
    expect(keepWarmLeft(w, 200_000)).toBe(0);
    expect(formatCountdown(keepWarmLeft(w, 30_000))).toBe('1:30');
    expect(formatCountdown(keepWarmLeft({ ...w, keep_warm_left: null }, 0))).toBe('—');
    expect(formatCountdown(42)).toBe('42 s');
  });

  it('names a worker by its GPU type, and by its image when that is not the default', () => {
    const w = { session: 's', gpu: 'A100', device: 'd', worker: 'w', state: 'idle', keep_warm: 300, keep_warm_left: 1 };
    expect(workerLabel(w)).toBe('A100');
    expect(workerLabel({ ...w, image: 'default' })).toBe('A100');
    expect(workerLabel({ ...w, image: 'train' })).toBe('A100 · train');
  });

  it('applies a worker image choice, and sets the kernel back to the default one when it is cleared', () => {
    expect(configCode({ gpu: 'cpu', image: 'train' })).toContain('"config --gpu cpu --image train"');
    expect(configCode({ image: '' })).toContain('"config --image default"'); // a kernel with a named image is told
    expect(configCode({ gpu: 'cpu' })).not.toContain('--image'); // nothing chosen: nothing said
    expect(actionCode('prewarm', { gpu: 'cpu', image: 'train' })).toContain('"prewarm --gpu cpu --image train"');
    expect(configCode({ image: "a'); import os" })).toBeNull();
    expect(configCode({ image: 'a@b' })).toBeNull(); // '@' separates a pool key's GPU and image
    expect(readChoice({ gpu: 'cpu', image: 'train' })).toEqual({ gpu: 'cpu', image: 'train' });
    expect(readChoice({ image: 'default' })).toEqual({});
    expect(readChoice({ image: 'bad name' })).toEqual({});
    expect(mergeChoice({ image: 'train', expect_failure: true }, { gpu: 'cpu', image: '' })).toEqual({
      gpu: 'cpu',
      expect_failure: true
    });
  });

  it('matches the backend session ids of a kernel by its id prefix', () => {
    expect(sessionPrefix('1b2c3d4e-aaaa-bbbb-cccc-0123456789ab')).toBe('1b2c3d4e-');
  });

  it('keeps the other keys of metadata.jupyter_gpu (jupyter-gpu run reads expect_failure there)', () => {
    const meta = { expect_failure: 'a demo', keep_warm: '10m' };
    expect(mergeChoice(meta, { gpu: 'cpu' })).toEqual({ expect_failure: 'a demo', gpu: 'cpu' });
    expect(mergeChoice(undefined, { gpu: 'A100', keep_warm: '1h' })).toEqual({ gpu: 'A100', keep_warm: '1h' });
    expect(meta).toEqual({ expect_failure: 'a demo', keep_warm: '10m' }); // not changed in place
  });
});
