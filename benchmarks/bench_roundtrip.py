"""Warm round trip of the cell `x = 1` through a real ipykernel (jupyter_client, BlockingKernelClient).

Variants, measured in the same run, interleaved round by round (the order rotates each round so no
variant always goes first):
  local  a plain cell `x = 1`                                       (anchor)
  px     `%%px\\nx = 1` with a 1-engine ipyparallel cluster, started inside the kernel
  gpu    `%%gpu\\nx = 1` after `%load_ext jupyter_gpu` and warm-up cells (worker warm; warm cells
         take the worker's direct lane, see jupyter_gpu/_wire/lane.py)
  relay  the same with JUPYTER_GPU_LANE=0: every cell relayed by the backend (for comparison)
  magic  `%%noop\nx = 1`: a cell magic that does nothing (what any cell magic costs the kernel)
  magic_footer  `%%footer\nx = 1`: a cell magic that only publishes one display output the size
         of a real footer (what the footer alone costs: the floor under any `%%gpu` cell)
  floor  `%%floor\nx = 1`: the least a warm remote cell can cost with this design - a request
         built once (only its cell id changes), written to the worker's lane as the execute_request
         arrives, then the worker's reply read, `x` bound and the footer published - with none of
         jupyter-gpu's own work (planning, names, bookkeeping, relaying); same worker, lane and
         footer as gpu.  Its `%%floor` cell pays IPython's whole text work, which a `%%gpu`
         cell does once per distinct cell (jupyter_gpu/notebook/cell_text.py), so gpu can come in under it

Each variant runs in its own kernel, so one variant's client threads (ipyparallel's, jupyter-gpu's)
cannot slow another's cells; the kernels are identical otherwise.  Round trip = from sending the
execute_request to having both its execute_reply and its iopub `status: idle`.

  before `%%gpu\nx = 1` on another checkout of the code (``--before DIR``: a git worktree of an
         earlier commit): its kernel, embedded backend and workers import that tree's packages
         (PYTHONPATH), interleaved with the others, so a change is measured against what it changed
         in one run (issue 18's restructure: `gpu_over_before`).  With the same code in both
         (--before pointing at this tree) `gpu` measured 1-3% slower than `before` (A/A, 2 runs):
         a bias of the kernels' places, as large as what is measured; so run it both ways too
         (PYTHONPATH=the earlier tree for this script, --before this tree) and take the geometric
         mean of the two orientations (results/roundtrip-before-after.json)

Targets (DESIGN.md): gpu median <= 0.5 x px median, and <= local median + 2 ms.

    python benchmarks/bench_roundtrip.py [--rounds 300] [--warmup 30] [--quick] [--before DIR] [--body CODE]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from common import (CellError, run_main, CellTimeout, Kernel, banner, fmt_stats, on_cleanup, ratio, stats,
                    verdict, write_result)

CODE = {"local": "x = 1", "px": "%%px\nx = 1", "gpu": "%%gpu\nx = 1", "relay": "%%gpu\nx = 1", "before": "%%gpu\nx = 1",
        "magic": "%%noop\nx = 1", "magic_footer": "%%footer\nx = 1", "floor": "%%floor\nx = 1"}
# the floor variants: a cell magic that does nothing, and one that publishes a real footer's bundle
# (the footer of the gpu variant's first cell) the way %%gpu does, and nothing else
FLOOR_MAGICS = """
from IPython.core.magic import register_cell_magic
from jupyter_gpu.cost import footer as _footer
from jupyter_gpu.notebook.publish import Publisher as _Publisher
_bench_bundle = _footer.bundle({footer!r})
@register_cell_magic
def noop(line, cell):
    pass
@register_cell_magic
def footer(line, cell):
    _Publisher(get_ipython()).display(_bench_bundle, {{}})
"""
# the design floor (see the docstring): jupyter-gpu's own pieces are used only to build the one
# request up front and to read, unpickle and publish; everything a real cell decides is skipped
FLOOR = """
import time as _time, jupyter_gpu as _jg
from IPython.core.magic import register_cell_magic
from jupyter_gpu.cost import footer as _footer
from jupyter_gpu._wire import framing as _framing, messages as _messages, serialization as _ser
from jupyter_gpu.notebook import cell as _cell
from jupyter_gpu.notebook.publish import Publisher as _Publisher
_s = _jg._magics.session
_plan = _cell.plan_cell(_s, "x = 1\\n", _jg._magics.cell_options(""), quiet=True)
_packed = _cell.pack(_s, _plan, 0)  # and the worker's lane it goes by
_hdr, _lane = _packed.header, _packed.route
_hdr["session"] = _s.id
_template, _n, _sent = dict(_s.last_footer), [0], []
_kernel = get_ipython().kernel
_handler = _kernel.shell_handlers["execute_request"]
async def _floor_handler(stream, ident, parent):
    if parent["content"].get("code", "").startswith("%%floor"):
        _n[0] += 1
        _sent.append((f"{_plan.base}-floor{_n[0]}.0", _time.monotonic()))
        _lane.send({**_hdr, "cell": _sent[-1][0]})
    await _handler(stream, ident, parent)
_kernel.shell_handlers["execute_request"] = _floor_handler
@register_cell_magic
def floor(line, cell):
    cid, t0 = _sent.pop()
    while True:
        msg = _lane.recv(timeout=30)
        if msg is None:
            raise TimeoutError("the worker did not answer a floor cell within 30 s")
        if msg.header.get("cell") == cid and msg.type == _messages.DONE:
            break
    ns = get_ipython().user_ns
    for name, spec in msg.header.get("values", {}).items():
        ns[name] = _ser.unpack(name, spec, msg.buffers, _s.reader)
    f = {**_template, "timings": {**_template["timings"], "wall": _time.monotonic() - t0}}
    _Publisher(get_ipython()).display(_footer.bundle(f), {})
"""
PX_START = ("import ipyparallel as ipp\n"
            "_bench_rc = ipp.Cluster(n=1).start_and_connect_sync()\n"
            "_bench_rc.wait_for_engines(1, timeout=60)\n"
            "_bench_rc.activate()\n")
PX_STOP = "_bench_rc.cluster.stop_cluster_sync()"


def start_px(kernel):
    kernel.execute(PX_START, timeout=180)
    on_cleanup(lambda: kernel.execute(PX_STOP, timeout=60, check=False))


def start_gpu(kernel, cold_timeout, route="lane"):
    kernel.execute("%load_ext jupyter_gpu", timeout=60)
    on_cleanup(lambda: kernel.execute("%gpu release", timeout=30, check=False))
    t0 = time.perf_counter()
    first = kernel.execute(CODE["gpu"], timeout=cold_timeout)
    footers = first.footers()
    print(f"  first %%gpu cell: {(time.perf_counter() - t0) * 1000:.1f} ms, "
          f"footer: {footers[-1] if footers else 'NONE'}")
    if not footers:
        raise RuntimeError("the %%gpu cell ran but produced no footer display_data "
                           "(application/vnd.jupyter-gpu.execution+json)")
    second = kernel.execute(CODE["gpu"], timeout=cold_timeout).footers()
    if not second or second[-1].get("route", "backend") != route:
        raise RuntimeError(f"a warm %%gpu cell took route {second and second[-1].get('route')!r}, expected {route!r}")
    return footers[-1]


def median_ratio_interval(a, b, resamples=2000, seed=1):
    """95% bootstrap interval of median(a) / median(b): each variant's samples resampled on
    their own (seeded, so a run's file can be recomputed)."""
    import random

    rng = random.Random(seed)
    ratios = sorted(statistics.median(rng.choices(a, k=len(a))) / statistics.median(rng.choices(b, k=len(b)))
                    for _ in range(resamples))
    return ratios[int(0.025 * resamples)], ratios[int(0.975 * resamples) - 1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="30 rounds, 10 warm-up: a smoke run")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per measured cell")
    ap.add_argument("--cold-timeout", type=float, default=180.0, help="seconds for the first %%gpu cell")
    ap.add_argument("--variants", default="local,px,gpu,relay,magic,magic_footer,floor")
    ap.add_argument("--before", metavar="DIR", help="also measure `before`: the gpu variant on the code in DIR")
    ap.add_argument("--body", default="x = 1", help="the cells' body instead of `x = 1` (local, gpu, relay, before), "
                    "e.g. 'import numpy\\nx = 1' (a cell that sends the kernel's versions, issue 23)")
    args = ap.parse_args(argv)
    args.body = args.body.replace("\\n", "\n")
    if args.body != "x = 1":
        for v in ("local", "gpu", "relay", "before"):
            CODE[v] = CODE[v][:-len("x = 1")] + args.body
    if args.quick:
        args.rounds, args.warmup = min(args.rounds, 30), min(args.warmup, 10)
    wanted = [v for v in args.variants.split(",") if v] + (["before"] if args.before else [])
    banner(f"roundtrip: `{args.body!r}` through a real kernel, {args.rounds} interleaved rounds")

    kernels, errors, first_footer = {}, {}, None
    for v in wanted:
        try:
            print(f"starting kernel for {v} ...", flush=True)
            env = {**os.environ, "JUPYTER_GPU_LANE": "0"} if v == "relay" else None
            if v == "before":  # that tree's packages first on the path, in the kernel and all it starts
                tree = os.path.abspath(args.before)
                paths = [tree, os.path.join(tree, "backend"), os.path.join(tree, "worker_image")]
                env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
            k = kernels[v] = Kernel(f"roundtrip-{v}", env=env)  # relay: its own embedded backend, lanes off
            if v == "px":
                start_px(k)
            elif v == "gpu":
                first_footer = start_gpu(k, args.cold_timeout)
            elif v == "relay":
                start_gpu(k, args.cold_timeout, route="backend")
            elif v == "before":
                start_gpu(k, args.cold_timeout)
                where = k.execute("import jupyter_gpu; print(jupyter_gpu.__file__)", timeout=30).stream_text()
                if not where.startswith(tree):
                    raise RuntimeError(f"the before kernel imports jupyter_gpu from {where.strip()}, not {tree}")
            elif v == "floor":
                start_gpu(k, args.cold_timeout)
                k.execute(FLOOR, timeout=60)
            elif v in ("magic", "magic_footer"):
                if first_footer is None:
                    raise RuntimeError("the floor variants publish the gpu variant's footer: measure gpu too")
                k.execute(FLOOR_MAGICS.format(footer={**first_footer, "cold": False}), timeout=60)
            k.track_children()
        except (CellError, CellTimeout, RuntimeError) as e:
            errors[v] = f"setup failed: {e}"
            print(f"!! variant {v} unavailable: {str(e)[:1500]}", file=sys.stderr, flush=True)
            kernels.pop(v, None)
    if "local" not in kernels:
        raise SystemExit("the local anchor kernel failed; nothing to compare with")

    active = [v for v in wanted if v in kernels]
    print(f"warm-up: {args.warmup} cells per variant ({', '.join(active)})", flush=True)
    for v in list(active):
        try:
            for _ in range(args.warmup):
                kernels[v].execute(CODE[v], timeout=args.timeout)
        except (CellError, CellTimeout) as e:
            errors[v] = f"warm-up failed: {e}"
            print(f"!! variant {v} dropped in warm-up: {str(e)[:1500]}", file=sys.stderr)
            active.remove(v)

    for k in kernels.values():
        k.track_children()
    samples = {v: [] for v in active}
    cold_in_measured = 0
    t_start = time.perf_counter()
    for r in range(args.rounds):
        order = active[r % len(active):] + active[:r % len(active)]
        for v in order:
            if v not in active:
                continue
            try:
                rep = kernels[v].execute(CODE[v], timeout=args.timeout)
            except (CellError, CellTimeout) as e:
                errors[v] = f"round {r} failed: {e}"
                print(f"!! variant {v} dropped at round {r}: {str(e)[:1500]}", file=sys.stderr)
                active.remove(v)
                continue
            samples[v].append(rep.seconds * 1000.0)
            if v in ("gpu", "relay", "floor", "before") and any(f.get("cold") for f in rep.footers()):
                cold_in_measured += 1
        if (r + 1) % max(1, args.rounds // 5) == 0:
            print(f"  round {r + 1}/{args.rounds}", flush=True)
    elapsed = time.perf_counter() - t_start

    st = {v: stats(s, "ms") for v, s in samples.items() if s}
    print("\nround trip (execute_request -> execute_reply + idle):")
    for v in wanted:
        print(fmt_stats(v, st[v]) if v in st else f"  {v:<28} NOT MEASURED: {errors.get(v, '?')[:200]}")

    med = {v: s["median"] for v, s in st.items()}
    ratios, targets = {}, {}
    if "px" in med:
        ratios["px_over_local"] = ratio(med["px"], med["local"])
    if "relay" in med:
        ratios["relay_minus_local_ms"] = med["relay"] - med["local"]
        if "px" in med:
            ratios["relay_over_px"] = ratio(med["relay"], med["px"])
    if "floor" in med and "px" in med:
        ratios["floor_over_px"] = ratio(med["floor"], med["px"])
    for floor in ("magic", "magic_footer", "floor"):
        if floor in med:
            ratios[f"{floor}_minus_local_ms"] = med[floor] - med["local"]
    if "gpu" in med:
        paired = [g - l for g, l in zip(samples["gpu"], samples["local"])]
        ratios["gpu_minus_local_ms"] = med["gpu"] - med["local"]
        ratios["gpu_minus_local_paired_median_ms"] = statistics.median(paired)
        ratios["gpu_over_local"] = ratio(med["gpu"], med["local"])
        ratios["gpu_p99_minus_local_p99_ms"] = st["gpu"]["p99"] - st["local"]["p99"]
        targets["gpu_le_local_plus_2ms"] = {"value_ms": ratios["gpu_minus_local_ms"], "limit_ms": 2.0,
                                            "pass": ratios["gpu_minus_local_ms"] <= 2.0}
        if "px" in med:
            ratios["gpu_over_px"] = ratio(med["gpu"], med["px"])
            ratios["gpu_p99_over_px_p99"] = ratio(st["gpu"]["p99"], st["px"]["p99"])
            targets["gpu_le_half_px"] = {"value": ratios["gpu_over_px"], "limit": 0.5,
                                         "pass": ratios["gpu_over_px"] <= 0.5}
    if "gpu" in med and "before" in med:
        ratios["gpu_over_before"] = ratio(med["gpu"], med["before"])
        ratios["gpu_minus_before_paired_median_ms"] = statistics.median(
            [g - b for g, b in zip(samples["gpu"], samples["before"])])
        if "px" in med:
            ratios["before_over_px"] = ratio(med["before"], med["px"])
    intervals = {}
    if "gpu" in med and "before" in med:
        intervals["gpu_over_before_95ci"] = median_ratio_interval(samples["gpu"], samples["before"])
    for v in ("gpu", "floor", "before"):
        if v in med and "px" in med:  # how far the machine's noise moves the ratio the target is on
            intervals[f"{v}_over_px_95ci"] = median_ratio_interval(samples[v], samples["px"])
    print("\nratios (medians, same run):")
    for k, val in ratios.items():
        print(f"  {k:<36} {val:8.3f}")
    for k, (lo, hi) in intervals.items():
        print(f"  {k:<36} {lo:8.3f} .. {hi:.3f}")
    print("\ntargets:")
    if "gpu" not in med:
        print("  gpu <= 0.5 x px            MISS (gpu variant not measured)")
        print("  gpu <= local + 2 ms        MISS (gpu variant not measured)")
    else:
        if "gpu_le_half_px" in targets:
            print(f"  gpu <= 0.5 x px            {verdict(targets['gpu_le_half_px']['pass'])}"
                  f"  (gpu/px = {ratios['gpu_over_px']:.3f})")
        print(f"  gpu <= local + 2 ms        {verdict(targets['gpu_le_local_plus_2ms']['pass'])}"
              f"  (gpu - local = {ratios['gpu_minus_local_ms']:+.3f} ms)")
        if cold_in_measured:
            print(f"  note: {cold_in_measured} measured %%gpu cells reported cold=true")

    write_result("roundtrip", {
        "config": {"rounds": args.rounds, "warmup": args.warmup, "timeout_s": args.timeout,
                   "code": CODE, "kernel_per_variant": True, "order": "rotating interleave"},
        "elapsed_s": elapsed, "variants": st, "ratios": ratios, "intervals": intervals, "targets": targets,
        "gpu_first_cell_footer": first_footer, "gpu_cold_in_measured": cold_in_measured,
        "errors": errors})
    return 0


if __name__ == "__main__":
    run_main(main)
