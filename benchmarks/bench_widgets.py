"""Widgets of a `%%gpu` cell (issue 19): a frontend's comm message to a remote slider, and a
`tqdm.auto` widget bar, each against the same thing in a local cell, in the same run, interleaved.

Part a, comm round trip.  Each variant makes an IntSlider whose observer prints
(`s.observe(lambda ch: print('moved to', ch['new']), names='value')`); the benchmark acts as the
frontend does when the slider is dragged: it sends a `comm_msg` (`method: update`, a new value) on
the shell channel and times it until the observer's stdout `stream` arrives on iopub with that
message as its parent (also recorded: until the kernel's `status: idle` for it).  The text must be
"moved to <value>\\n".  Variants, each in its own kernel (as in the other benchmarks), the order
rotating sample by sample:
  local          a local slider in a kernel without jupyter-gpu                     (anchor)
  gpu            a `%%gpu` slider (its comm is the worker's; the kernel relays)
  local_in_gpu   a local slider in the gpu variant's kernel (what loading jupyter-gpu costs a
                 local widget; no target)
Target: gpu median <= local median + 2 ms.

Part b, `from tqdm.auto import tqdm\\nfor i in tqdm(range(10000)): pass` as a local cell and as a
`%%gpu` cell: execute_request -> execute_reply + iopub idle, rounds alternating in order.  Before
measuring, both kernels imported tqdm.auto and ipywidgets (the gpu kernel on its worker too), the
`%%gpu` worker is warm and each variant ran the cell in warm-up rounds: a local kernel that paid
its imports earlier is compared with a warm worker that paid them too.  Each round checks the
widget bar (FloatProgress) reached 10000.  Target: gpu median <= 1.2 x local median.

    python benchmarks/bench_widgets.py [--samples 200] [--tqdm-rounds 60] [--quick]
"""
from __future__ import annotations

import argparse
import sys
import time

from common import (CellError, CellTimeout, Kernel, banner, fmt_stats, on_cleanup, ratio, run_main, stats,
                    verdict, write_result)

SLIDER_T = ("import ipywidgets as W\n{s} = W.IntSlider(value=0, min=0, max=10**9)\n"
            "{s}.observe(lambda ch: print('moved to', ch['new']), names='value')\n{s}")
SLIDER = SLIDER_T.format(s="s")
TQDM = "from tqdm.auto import tqdm\nfor i in tqdm(range(10000)): pass"
TQDM_N = 10000
IMPORTS = "import tqdm.auto, ipywidgets"
FLOOR = "x = 1"


class CommTimeout(RuntimeError):
    pass


def slider_comm_id(reply):
    """The comm id of the IntSlider the cell opened (its view's model)."""
    ids = [m["content"]["comm_id"] for m in reply.iopub if m["msg_type"] == "comm_open"
           and m["content"]["data"].get("state", {}).get("_model_name") == "IntSliderModel"]
    if len(ids) != 1:
        raise RuntimeError(f"expected one IntSliderModel comm_open, got {len(ids)}: "
                           f"{[m['msg_type'] for m in reply.iopub]}")
    return ids[0]


def move(kernel, comm_id, value, timeout):
    """Send the frontend's `update` of the slider; return (s to the observer's stdout, s to idle, text)."""
    kc = kernel.kc
    msg = kc.session.msg("comm_msg", {"comm_id": comm_id, "data": {
        "method": "update", "state": {"value": value}, "buffer_paths": []}})
    msg_id = msg["header"]["msg_id"]
    iopub, sock = kernel._iopub, kernel._iopub.socket
    t0 = time.perf_counter()
    kc.shell_channel.send(msg)
    deadline = t0 + timeout
    t_stream, text, idle = None, "", False
    while not idle:
        left = deadline - time.perf_counter()
        if left <= 0:
            raise CommTimeout(f"[{kernel.name}] no {'stdout' if t_stream is None else 'idle'} after "
                              f"{timeout:.0f} s for the comm_msg (value {value})\n{kernel.log_tail()}")
        if not sock.poll(min(left, 1.0) * 1000):
            continue
        while sock.poll(0):
            m = iopub.get_msg(timeout=0)
            if m["parent_header"].get("msg_id") != msg_id:
                continue
            if m["msg_type"] == "stream" and m["content"].get("name") == "stdout":
                if t_stream is None:
                    t_stream = time.perf_counter()
                text += m["content"]["text"]
            elif m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                idle = True
            elif m["msg_type"] == "error":
                text += f"<error {m['content'].get('ename')}: {m['content'].get('evalue')}>"
    t_idle = time.perf_counter()
    if t_stream is None:
        raise RuntimeError(f"[{kernel.name}] the kernel went idle without the observer's stdout "
                           f"(value {value}; got {text!r})")
    return t_stream - t0, t_idle - t0, text


def bar_value(reply, bar_model="FloatProgressModel"):
    """The last value the cell set on its tqdm bar (a comm_msg update), or None."""
    bars = {m["content"]["comm_id"] for m in reply.iopub if m["msg_type"] == "comm_open"
            and m["content"]["data"].get("state", {}).get("_model_name") == bar_model}
    values = [m["content"]["data"]["state"]["value"] for m in reply.iopub
              if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] in bars
              and "value" in m["content"]["data"].get("state", {})]
    return values[-1] if values else None


def setup(args, errors):
    """The kernels, each variant's slider (name -> (kernel, comm id)), warm and imported."""
    kernels = {"local": Kernel("widgets-local")}
    sliders = {"local": (kernels["local"], slider_comm_id(kernels["local"].execute(SLIDER)))}
    kernels["local"].execute(IMPORTS)
    try:
        k = kernels["gpu"] = Kernel("widgets-gpu")
        k.execute("%load_ext jupyter_gpu", timeout=60)
        on_cleanup(lambda: k.execute("%gpu release", timeout=30, check=False))
        k.execute("%%gpu\n_warm = 1", timeout=180)  # backend start + cold start outside the samples
        k.execute(f"%%gpu\n{IMPORTS}", timeout=180)  # the worker's imports
        k.execute(IMPORTS, timeout=60)  # and the kernel's (a %%gpu import brings the modules back)
        sliders["gpu"] = (k, slider_comm_id(k.execute("%%gpu\n" + SLIDER, timeout=120)))
        sliders["local_in_gpu"] = (k, slider_comm_id(k.execute(SLIDER_T.format(s="s_local"))))
        k.track_children()
    except (CellError, CellTimeout, RuntimeError) as e:
        errors["gpu"] = f"setup failed: {e}"
        print(f"!! %%gpu variant unavailable: {str(e)[:2000]}", file=sys.stderr, flush=True)
        kernels.pop("gpu", None)
    return kernels, sliders


def part_a(sliders, args, errors):
    names = list(sliders)
    samples = {v: {"stream_ms": [], "idle_ms": []} for v in names}
    wrong = {v: 0 for v in names}
    value = 0
    for i in range(-args.warmup, args.samples):
        order = names[i % len(names):] + names[:i % len(names)]
        for v in order:
            if v in errors:
                continue
            value += 1
            kernel, comm_id = sliders[v]
            try:
                to_stream, to_idle, text = move(kernel, comm_id, value, args.timeout)
            except (CommTimeout, RuntimeError) as e:
                errors[v] = f"sample {i} failed: {e}"
                print(f"!! {v} dropped at sample {i}: {str(e)[:2000]}", file=sys.stderr, flush=True)
                continue
            if text != f"moved to {value}\n":
                wrong[v] += 1
                if wrong[v] <= 3:
                    print(f"!! {v}: observer printed {text!r} for value {value}", file=sys.stderr, flush=True)
            if i >= 0:
                samples[v]["stream_ms"].append(to_stream * 1000)
                samples[v]["idle_ms"].append(to_idle * 1000)
    st = {v: {"to_stdout": stats(s["stream_ms"], "ms"), "to_idle": stats(s["idle_ms"], "ms"),
              "wrong_text": wrong[v]} for v, s in samples.items() if s["stream_ms"]}
    print("\na. comm_msg (slider moved) -> the observer's stdout on iopub:")
    for v in names:
        print(fmt_stats(v, st[v]["to_stdout"]) if v in st else f"  {v:<28} NOT MEASURED: {errors.get(v, '?')[:300]}")
    print("   ... -> iopub idle:")
    for v in names:
        if v in st:
            print(fmt_stats(v, st[v]["to_idle"]))
    ratios, targets = {}, {}
    if "gpu" in st and "local" in st:
        g, l = st["gpu"]["to_stdout"]["median"], st["local"]["to_stdout"]["median"]
        ratios["comm_gpu_minus_local_ms"] = g - l
        ratios["comm_gpu_over_local"] = ratio(g, l)
        ok = g <= l + 2.0 and not st["gpu"]["wrong_text"] and "gpu" not in errors
        targets["comm_gpu_le_local_plus_2ms"] = {"gpu_median_ms": g, "local_median_ms": l,
                                                 "difference_ms": g - l, "pass": ok}
        print(f"   gpu - local (medians): {g - l:+.3f} ms  (gpu/local {ratio(g, l):.2f}x)  "
              f"target <= +2 ms: {verdict(ok)}")
    else:
        targets["comm_gpu_le_local_plus_2ms"] = {"pass": False, "error": errors.get("gpu", "not measured")}
    if "local_in_gpu" in st and "local" in st:
        ratios["comm_local_in_gpu_kernel_minus_local_ms"] = (st["local_in_gpu"]["to_stdout"]["median"]
                                                            - st["local"]["to_stdout"]["median"])
    return st, ratios, targets


def part_b(kernels, args, errors):
    """The tqdm cell in both kernels; `x = 1` in both too (no target: the fixed cost of any warm
    cell, so that what the widget traffic adds can be told from it)."""
    jobs = {"local": ("local", TQDM), "gpu": ("gpu", "%%gpu\n" + TQDM),
            "local_x1": ("local", FLOOR), "gpu_x1": ("gpu", "%%gpu\n" + FLOOR)}
    names = [v for v, (k, _) in jobs.items() if k in kernels]
    times = {v: [] for v in names}
    bars = {v: [] for v in names}
    runs = {v: [] for v in names}  # the footer's worker run time of a %%gpu cell, ms
    print(f"\nb. {TQDM!r}: rounds (order rotating)", flush=True)
    for r in range(-args.tqdm_warmup, args.tqdm_rounds):
        for v in names[r % len(names):] + names[:r % len(names)]:
            if jobs[v][0] in errors:
                continue
            try:
                rep = kernels[jobs[v][0]].execute(jobs[v][1], timeout=args.timeout)
            except (CellError, CellTimeout, RuntimeError) as e:
                errors[jobs[v][0]] = f"tqdm round {r} ({v}) failed: {e}"
                print(f"!! {v} dropped at tqdm round {r}: {str(e)[:2000]}", file=sys.stderr, flush=True)
                continue
            last = bar_value(rep) if jobs[v][1].endswith(TQDM) else None
            stderr = rep.stream_text("stderr")
            foot = [f for f in rep.footers() if "timings" in f]
            if r < 0 or not v.endswith("x1"):
                tag = "warm-up" if r < 0 else f"round {r + 1}"
                print(f"  {tag} {v:<8}: {rep.seconds * 1000:8.1f} ms" + (f"  bar at {last}" if last else "")
                      + (f"  stderr {stderr[:80]!r}" if stderr else ""), flush=True)
            if r >= 0:
                times[v].append(rep.seconds * 1000)
                bars[v].append(last)
                if foot:
                    runs[v].append(foot[-1]["timings"]["run"] * 1000)
    st = {}
    for v in names:
        if not times[v]:
            continue
        st[v] = {"cell": stats(times[v], "ms"), "footer_run": stats(runs[v], "ms")}
        if not v.endswith("x1"):
            st[v].update(bar_reached_end_every_round=all(b == TQDM_N for b in bars[v]), bar_last_values=bars[v])
    print("   execute_request -> reply + idle (warm; tqdm.auto and ipywidgets imported on both sides first):")
    for v in names:
        print(fmt_stats(v, st[v]["cell"]) if v in st else f"  {v:<28} NOT MEASURED: {errors.get(jobs[v][0], '?')[:300]}")
    if st.get("gpu", {}).get("footer_run", {}).get("n"):
        print(fmt_stats("gpu: its footer's run", st["gpu"]["footer_run"]))
    ratios, targets = {}, {}
    if "gpu" in st and "local" in st:
        q = ratio(st["gpu"]["cell"]["median"], st["local"]["cell"]["median"])
        ratios["tqdm_gpu_over_local"] = q
        ratios["tqdm_gpu_minus_local_ms"] = st["gpu"]["cell"]["median"] - st["local"]["cell"]["median"]
        ok = q <= 1.2 and st["gpu"]["bar_reached_end_every_round"] and "gpu" not in errors
        targets["tqdm_gpu_le_1.2x_local"] = {"ratio": q, "pass": ok}
        print(f"   gpu/local (medians): {q:.3f}  target <= 1.2: {verdict(ok)}"
              f"  (gpu - local {ratios['tqdm_gpu_minus_local_ms']:+.1f} ms)")
        if "gpu_x1" in st and "local_x1" in st:
            ratios["x1_gpu_minus_local_ms"] = st["gpu_x1"]["cell"]["median"] - st["local_x1"]["cell"]["median"]
            print(f"   the same for `{FLOOR}` (any warm cell's fixed cost): "
                  f"gpu - local {ratios['x1_gpu_minus_local_ms']:+.1f} ms")
    else:
        targets["tqdm_gpu_le_1.2x_local"] = {"pass": False, "error": errors.get("gpu", "not measured")}
    return st, ratios, targets


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200, help="comm round trips per variant")
    ap.add_argument("--warmup", type=int, default=20, help="comm round trips per variant, not counted")
    ap.add_argument("--tqdm-rounds", type=int, default=60)
    ap.add_argument("--tqdm-warmup", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="40 samples, 4 tqdm rounds: a smoke run")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per sample or cell")
    args = ap.parse_args(argv)
    if args.quick:
        args.samples, args.warmup = min(args.samples, 40), min(args.warmup, 5)
        args.tqdm_rounds, args.tqdm_warmup = min(args.tqdm_rounds, 4), min(args.tqdm_warmup, 1)
    banner(f"widgets: slider comm round trip ({args.samples} samples/variant) and a tqdm.auto loop "
           f"({args.tqdm_rounds} rounds), local vs %%gpu")
    errors = {}
    kernels, sliders = setup(args, errors)
    a_st, a_ratios, a_targets = part_a(sliders, args, errors)
    b_st, b_ratios, b_targets = part_b(kernels, args, errors)
    print("\ntargets:")
    for k, t in {**a_targets, **b_targets}.items():
        print(f"  {k:<32} {verdict(t['pass'])}")
    write_result("widgets", {
        "config": {"samples": args.samples, "warmup": args.warmup, "tqdm_rounds": args.tqdm_rounds,
                   "tqdm_warmup": args.tqdm_warmup, "slider_cell": SLIDER, "tqdm_cell": TQDM,
                   "imports_before_measuring": IMPORTS, "kernel_per_variant": True,
                   "local_in_gpu": "a local slider in the gpu variant's kernel",
                   "order": "comm: rotating per sample; tqdm: alternating per round"},
        "variants": {"comm": a_st, "tqdm": b_st},
        "ratios": {**a_ratios, **b_ratios}, "targets": {**a_targets, **b_targets}, "errors": errors})
    return 0


if __name__ == "__main__":
    run_main(main)
