/**
 * @jest-environment jsdom
 */
import { CALL_MIME, MAX_CALLS, callHint, callOf, renderCall, withCalls } from '../src/calls';

const call = { id: 'fc-0123456789abcdef', function: 'train', created: 1796515200.5 };

describe('spawned call output', () => {
  it('uses the mime type the kernel publishes', () => {
    expect(CALL_MIME).toBe('application/vnd.jupyter-gpu.call+json');
  });

  it('reads a call from an output, as an object or its JSON text; refuses a bad id', () => {
    expect(callOf(call)).toEqual(call);
    expect(callOf(JSON.stringify(call))).toEqual(call);
    expect(callOf({ id: 'fc-1' })).toEqual({ id: 'fc-1', function: '', created: null });
    expect(callOf({ id: "fc-1'); import os; ('" })).toBeNull(); // pasted into code by the hint
    expect(callOf({ id: 42 })).toBeNull();
    expect(callOf('not json')).toBeNull();
    expect(callOf(null)).toBeNull();
  });

  it('renders the function, the id and the code that gets the call back', () => {
    const node = document.createElement('div');
    renderCall(node, callOf(call));
    const text = (cls: string) => node.querySelector(`.jp-gpu-call-${cls}`)?.textContent;
    expect(text('function')).toBe('train');
    expect(text('id')).toBe('fc-0123456789abcdef');
    expect(text('hint')).toBe("jupyter_gpu.FunctionCall.from_id('fc-0123456789abcdef')");
    expect(node.querySelector('.jp-gpu-call-id')?.getAttribute('title')).toMatch(/^created /);
    renderCall(node, callOf(call)); // rendered again: replaced, not appended
    expect(node.querySelectorAll('.jp-gpu-call-id').length).toBe(1);
    expect(callHint('fc-9')).toBe("jupyter_gpu.FunctionCall.from_id('fc-9')");
  });
});

describe('calls in the cell metadata', () => {
  it('adds a call, keeping the cell metadata\'s other keys', () => {
    expect(withCalls(undefined, [call])).toEqual({ calls: [call] });
    expect(withCalls({ note: 'x' }, [call])).toEqual({ note: 'x', calls: [call] });
  });

  it('records an id once: nothing to write when it is known (the notebook stays clean)', () => {
    const meta = withCalls(undefined, [call]);
    expect(withCalls(meta, [call])).toBeNull();
    const other = { ...call, id: 'fc-2' };
    expect(withCalls(meta, [other, other, call])).toEqual({ calls: [call, other] });
  });

  it('drops invalid entries a hand-edited notebook holds, and keeps the newest MAX_CALLS', () => {
    expect(withCalls({ calls: [{ id: 'bad id' }, 'x'] }, [call])).toEqual({ calls: [call] });
    const many = Array.from({ length: MAX_CALLS + 5 }, (_, i) => ({ id: `fc-${i}`, function: 'f', created: null }));
    const kept = withCalls(undefined, many)!.calls as { id: string }[];
    expect(kept.length).toBe(MAX_CALLS);
    expect(kept[0].id).toBe('fc-5');
    expect(kept[kept.length - 1].id).toBe(`fc-${MAX_CALLS + 4}`);
  });
});
