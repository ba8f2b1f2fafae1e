"""Whole notebooks of many small cells (issue 19): each chapter run as it is (anchor) and with every
code cell a `%%gpu` cell, from kernel start to its last output, in the same run, interleaved.

The chapters are benchmarks/notebooks/{numpy,pandas,matplotlib}.ipynb (about 34, 26 and 14 small
code cells: arrays, slicing, broadcasting, ufuncs and printing; frames, groupby and displays; small
plots and rich displays).  Each run starts a fresh kernel (common.Kernel: a real ipykernel, its own
embedded backend), so what a user pays on opening a notebook is in the time: for the `%%gpu` run
the kernel's start, a first cell `%load_ext jupyter_gpu`, the embedded backend's start (begun by
that cell) and the worker's cold start.  Each `%%gpu` run is made twice: on a plain kernel ("gpu")
and on the jupyter-gpu kernelspec ("gpu-kernel"), whose provisioner starts the embedded backend as
the kernel starts (jupyter_gpu/_client/provisioner.py).  Time = from starting the kernel to the last
cell's execute_reply + iopub idle (the kernel's shutdown is not counted).  Each round runs every
chapter all three ways, the order rotating; a warm-up round (disk caches) is not counted.

Also recorded: per-cell warm times (every cell but a chapter's first; medians of the `%%gpu` cells
vs the local ones), each cell's stdout compared with the local run's (mismatches counted), and
where the `%%gpu` run's extra time goes, per chapter (medians over rounds), from the footers
(jupyter_gpu/cost/footer.py: `timings.wall` is the kernel's clock from the cell's plan to its
conclusion, `run` the worker's, `cold_start` the worker's start):
  kernel start       the %%gpu run's kernel start minus the local run's (should be ~0)
  load_ext           the `%load_ext jupyter_gpu` cell
  backend + connect  the first %%gpu cell's time before its footer's clock starts (the embedded
                     backend started and connected)
  worker cold start  the first %%gpu cell's `cold_start` + `queue`
  first cell, rest   the first cell's remaining extra over the local first cell
  per-cell overhead  the other cells' extra over the local ones, split: outside the footer clock
                     (IPython, the magic, publishing), footer wall - run (pack, send, drain, names
                     back, conclude), and worker run - the local cell's time (the code itself)
  other              what is left (the client's own gaps between cells)
Target: each chapter's %%gpu run <= 1.3 x its local run (medians), and all three together.

    python benchmarks/bench_notebooks.py [--rounds 5] [--warmup 1] [--only numpy,pandas] [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import nbformat

from common import (HERE, CellError, CellTimeout, Kernel, banner, fmt_stats, ratio, run_main, stats, verdict,
                    write_result)

CHAPTERS = ("numpy", "pandas", "matplotlib")
TARGET = 1.3


def code_cells(name):
    nb = nbformat.read(HERE / "notebooks" / f"{name}.ipynb", as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code" and c.source.strip()]


def _footer(rep):
    done = [f for f in rep.footers() if "timings" in f]
    return done[-1] if done else None


# the runs of each chapter: its cells as they are; every cell `%%gpu` on a plain kernel (a first cell
# `%load_ext jupyter_gpu` starts the embedded backend); the same on the jupyter-gpu kernelspec, whose
# provisioner starts the backend with the kernel (jupyter_gpu/_client/provisioner.py)
VARIANTS = {"local": None, "gpu": None, "gpu-kernel": "jupyter-gpu"}
GPU_VARIANTS = ("gpu", "gpu-kernel")


def run_notebook(name, cells, variant, timeout):
    """One fresh kernel through the chapter; the kernel's shutdown is outside the time."""
    gpu = variant != "local"
    t0 = time.perf_counter()
    k = Kernel(f"nb-{name}-{variant}", provisioner=VARIANTS[variant])
    res = {"kernel_start_s": time.perf_counter() - t0, "load_ext_s": 0.0, "cells": []}
    try:
        if gpu:
            res["load_ext_s"] = k.execute("%load_ext jupyter_gpu", timeout=60).seconds
        for src in cells:
            rep = k.execute(("%%gpu\n" + src) if gpu else src, timeout=timeout)
            foot = _footer(rep)
            res["cells"].append({
                "s": rep.seconds, "stdout": rep.stream_text("stdout"),
                "stderr": rep.stream_text("stderr")[:300],
                "outputs": [m["msg_type"] for m in rep.iopub if m["msg_type"] != "execute_input"
                            and "application/vnd.jupyter-gpu.execution+json" not in m["content"].get("data", {})],
                "footer": foot and {"timings": foot["timings"], "cold": foot["cold"], "route": foot.get("route"),
                                   "start_method": foot.get("start_method")}})
        res["total_s"] = time.perf_counter() - t0
        if gpu:
            k.track_children()
    finally:
        k.close()
    return res


def breakdown(g, l):
    """Where the %%gpu run `g` spent its time over the local run `l` of the same chapter (s)."""
    first, lfirst = g["cells"][0], l["cells"][0]
    ft = first["footer"]["timings"]
    b = {"extra": g["total_s"] - l["total_s"],
         "kernel_start": g["kernel_start_s"] - l["kernel_start_s"],
         "load_ext": g["load_ext_s"],
         "backend_and_connect": first["s"] - ft["wall"],
         "worker_cold_start": ft["cold_start"] + ft["queue"]}
    b["first_cell_rest"] = first["s"] - lfirst["s"] - b["backend_and_connect"] - b["worker_cold_start"]
    b["first_cell_worker_run_minus_local"] = ft["run"] - lfirst["s"]
    b["first_cell_kernel_side"] = ft["wall"] - ft["queue"] - ft["cold_start"] - ft["run"]
    outside = wall_minus_run = run_vs_local = 0.0
    for gc, lc in zip(g["cells"][1:], l["cells"][1:]):
        # a cell without a footer (none seen) counts whole as outside the footer clock
        t = gc["footer"]["timings"] if gc["footer"] else {"wall": 0.0, "run": 0.0}
        outside += gc["s"] - t["wall"]
        wall_minus_run += t["wall"] - t["run"]
        run_vs_local += t["run"] - lc["s"]
    b["per_cell_overhead"] = outside + wall_minus_run + run_vs_local
    b["per_cell_outside_footer"] = outside
    b["per_cell_footer_wall_minus_run"] = wall_minus_run
    b["per_cell_worker_run_minus_local"] = run_vs_local
    b["other"] = b["extra"] - sum(b[k] for k in ("kernel_start", "load_ext", "backend_and_connect",
                                                  "worker_cold_start", "first_cell_rest", "per_cell_overhead"))
    return b


PARTS = [("kernel_start", "kernel start (gpu - local)"), ("load_ext", "%load_ext jupyter_gpu"),
         ("backend_and_connect", "backend start + connect"), ("worker_cold_start", "worker cold start"),
         ("first_cell_rest", "first cell, rest"),
         ("first_cell_worker_run_minus_local", "  worker run - local first cell"),
         ("first_cell_kernel_side", "  footer wall - queue/cold/run"),
         ("per_cell_overhead", "per-cell overhead, other cells"),
         ("per_cell_outside_footer", "  outside the footer clock"),
         ("per_cell_footer_wall_minus_run", "  footer wall - worker run"),
         ("per_cell_worker_run_minus_local", "  worker run - local cell"), ("other", "other")]


def mismatches(g, l):
    """Cells whose stdout differs from the local run's: [(index, local, gpu)]."""
    return [(i, lc["stdout"][:200], gc["stdout"][:200]) for i, (gc, lc) in enumerate(zip(g["cells"], l["cells"]))
            if gc["stdout"] != lc["stdout"]]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--only", default=",".join(CHAPTERS))
    ap.add_argument("--quick", action="store_true", help="1 round, no warm-up: a smoke run")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds per cell")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.warmup = min(args.rounds, 1), 0
    chapters = [c for c in args.only.split(",") if c]
    cells = {c: code_cells(c) for c in chapters}
    banner(f"notebooks: {', '.join(f'{c} ({len(cells[c])} cells)' for c in chapters)}, local vs every "
           f"cell %%gpu, fresh kernel each run, {args.rounds} rounds")

    errors, runs = {}, {c: {v: [] for v in VARIANTS} for c in chapters}
    order = list(VARIANTS)
    for r in range(-args.warmup, args.rounds):
        for i, c in enumerate(chapters):
            got = {}
            k = (r + i) % len(order)
            for v in order[k:] + order[:k]:  # (each variant first, middle and last in turn)
                key = f"{c}.{v}"
                if key in errors:
                    continue
                try:
                    got[v] = run_notebook(c, cells[c], v, args.timeout)
                except (CellError, CellTimeout, RuntimeError) as e:
                    errors[key] = f"round {r} failed: {e}"
                    print(f"!! {key} dropped at round {r}: {str(e)[:2000]}", file=sys.stderr, flush=True)
            if "local" not in got:
                continue
            tag = "warm-up" if r < 0 else f"round {r + 1}"
            for v in GPU_VARIANTS:
                if v not in got:
                    continue
                bad = mismatches(got[v], got["local"])
                b = breakdown(got[v], got["local"])
                print(f"  {tag} {c:<10}: local {got['local']['total_s']:6.2f} s  {v:<10} {got[v]['total_s']:6.2f} s"
                      f"  ({ratio(got[v]['total_s'], got['local']['total_s']):.2f}x; backend+connect "
                      f"{b['backend_and_connect']:.2f} s, cold start {b['worker_cold_start']:.2f} s, per-cell "
                      f"{b['per_cell_overhead']:+.2f} s)" + (f"  stdout differs in {len(bad)} cell(s)" if bad else ""),
                      flush=True)
                for idx, lo, go in bad[:3]:
                    print(f"     cell {idx}: local {lo!r} vs {v} {go!r}", file=sys.stderr)
                if r >= 0:
                    runs[c][v].append(dict(got[v], breakdown=b, stdout_mismatches=bad))
            if r >= 0:
                runs[c]["local"].append(got["local"])

    per_chapter, ratios, targets = {c: {} for c in chapters}, {}, {}
    warm = {v: [] for v in VARIANTS}
    for v in GPU_VARIANTS:
        tv = v.replace("-", "_")  # (the keys of the plain kernel's run are those of earlier results)
        print(f"\nwhole notebook, kernel start -> last output (s), {v} ({'the jupyter-gpu kernelspec' if VARIANTS[v] else 'a plain kernel, %load_ext'}):")
        for c in chapters:
            gs, ls = runs[c][v], runs[c]["local"]
            if not gs or not ls:
                print(f"  {c:<10} NOT MEASURED: {errors.get(f'{c}.{v}') or errors.get(c + '.local', '?')[:300]}")
                targets[f"{c}_{tv}_le_{TARGET}x_local"] = {"pass": False, "error": "not measured"}
                continue
            cw = {u: [x["s"] * 1000 for run in runs[c][u] for x in run["cells"][1:]] for u in ("local", v)}
            warm[v] += cw[v]
            if v == GPU_VARIANTS[0]:
                warm["local"] += cw["local"]
            st = {"cells": len(cells[c]),
                  "local": stats([x["total_s"] for x in ls], "s"), "gpu": stats([x["total_s"] for x in gs], "s"),
                  "warm_cell_local": stats(cw["local"], "ms"), "warm_cell_gpu": stats(cw[v], "ms"),
                  "breakdown_median_s": {k: statistics.median([x["breakdown"][k] for x in gs
                                                               if x["breakdown"][k] is not None] or [float("nan")])
                                         for k in gs[0]["breakdown"]},
                  "stdout_mismatched_cells": max(len(x["stdout_mismatches"]) for x in gs),
                  "first_footer_cold": [x["cells"][0]["footer"]["cold"] for x in gs],
                  "first_footer_start_method": [x["cells"][0]["footer"]["start_method"] for x in gs],
                  "warm_cell_routes": sorted({str(y["footer"] and y["footer"]["route"]) for x in gs for y in x["cells"][1:]})}
            q = ratio(st["gpu"]["median"], st["local"]["median"])
            ratios[f"{c}_{tv}_over_local"] = q
            ratios[f"{c}_warm_cell_{tv}_over_local"] = ratio(st["warm_cell_gpu"]["median"], st["warm_cell_local"]["median"])
            targets[f"{c}_{tv}_le_{TARGET}x_local"] = {"ratio": q, "pass": q <= TARGET and f"{c}.{v}" not in errors}
            per_chapter[c][v] = st
            print(fmt_stats(f"{c} local", st["local"]))
            print(fmt_stats(f"{c} {v}", st["gpu"]))
            print(f"  {'':<28} {v}/local {q:.3f}  target <= {TARGET}: {verdict(targets[f'{c}_{tv}_le_{TARGET}x_local']['pass'])}"
                  + (f"  (stdout differs in {st['stdout_mismatched_cells']} cell(s))" if st["stdout_mismatched_cells"] else ""))
        done = [c for c in chapters if v in per_chapter[c]]
        n = min((len(runs[c][v]) for c in done), default=0)
        if done and n:
            tot = {u: [sum(runs[c][u][j]["total_s"] for c in done) for j in range(n)] for u in ("local", v)}
            q = ratio(statistics.median(tot[v]), statistics.median(tot["local"]))
            ratios[f"all_{tv}_over_local"] = q
            ok = q <= TARGET and len(done) == len(chapters) and not any(k.endswith(f".{v}") or k.endswith(".local")
                                                                           for k in errors)
            targets[f"all_{tv}_le_{TARGET}x_local"] = {"ratio": q, "pass": ok}
            print(f"  all chapters, per round: local {statistics.median(tot['local']):.2f} s, {v} "
                  f"{statistics.median(tot[v]):.2f} s (medians): {q:.3f}x  target <= {TARGET}: {verdict(ok)}")
        if warm[v]:
            print(f"\nper cell, warm (every cell but a chapter's first), ms, {v}:")
            print(fmt_stats("local", stats(warm["local"], "ms")))
            print(fmt_stats(v, stats(warm[v], "ms")))
            ratios[f"warm_cell_{tv}_over_local"] = ratio(statistics.median(warm[v]), statistics.median(warm["local"]))
            ratios[f"warm_cell_{tv}_minus_local_ms"] = statistics.median(warm[v]) - statistics.median(warm["local"])
            print(f"  {'':<28} {v}/local {ratios[f'warm_cell_{tv}_over_local']:.2f}x, "
                  f"{ratios[f'warm_cell_{tv}_minus_local_ms']:+.2f} ms (medians)")
        if done:
            print(f"\nwhere the {v} run's extra time goes (s, medians over rounds):")
            print(f"  {'':<34}" + "".join(f"{c:>12}" for c in done))
            for k, label in [("extra", "extra over local")] + PARTS:
                print(f"  {label:<34}" + "".join(f"{per_chapter[c][v]['breakdown_median_s'][k]:12.3f}" for c in done))

    write_result("notebooks", {
        "config": {"rounds": args.rounds, "warmup": args.warmup, "chapters": {c: len(cells[c]) for c in chapters},
                   "gpu_run": "a first cell `%load_ext jupyter_gpu`, then every code cell prefixed with `%%gpu`",
                   "gpu-kernel_run": "the same, on the jupyter-gpu kernelspec (its provisioner starts the "
                                     "embedded backend with the kernel)",
                   "time": "Kernel() start -> last cell's execute_reply + iopub idle; shutdown not counted",
                   "order": "per round and chapter, local/gpu alternating", "target": TARGET},
        "variants": per_chapter, "ratios": ratios, "targets": targets,
        "breakdown_parts": dict(PARTS),
        "rounds_detail": {c: {v: [{"total_s": x["total_s"], "kernel_start_s": x["kernel_start_s"],
                                   "load_ext_s": x["load_ext_s"], "cell_ms": [y["s"] * 1000 for y in x["cells"]],
                                   **({"breakdown": x["breakdown"], "stdout_mismatches": x["stdout_mismatches"],
                                       "first_footer": x["cells"][0]["footer"]} if v != "local" else {})}
                                  for x in runs[c][v]] for v in VARIANTS} for c in chapters},
        "errors": errors})
    return 0


if __name__ == "__main__":
    run_main(main)
