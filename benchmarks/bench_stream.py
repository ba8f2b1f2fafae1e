"""100,000 printed lines: a local cell (anchor) and a `%%gpu` cell, in the same run, interleaved.

The cell is `for i in range(100000): print(i)`.  All iopub `stream` (stdout) messages whose parent
is the request are collected and joined; the lines must be exactly "0".."99999" in order, once each
(lost, duplicated and out-of-order counts are reported; footer/live-status display outputs of the
`%%gpu` cell are ignored).  lines/s = 100,000 / (execute_request -> execute_reply + iopub idle).
Target (DESIGN.md): none lost; lines/s reported, as a ratio to the local cell.

    python benchmarks/bench_stream.py [--rounds 3] [--lines 100000] [--quick]
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter

from common import (CellError, run_main, CellTimeout, Kernel, banner, embedded_ready, fmt_stats, on_cleanup, ratio,
                    stats, verdict, write_result)


def cell(lines, gpu):
    body = f"for i in range({lines}):\n    print(i)"
    return f"%%gpu --no-out\n{body}" if gpu else body


def check_lines(text, lines):
    """Compare the received stdout with "0".."lines-1"; count what is lost, duplicated, misplaced."""
    got = text.split("\n")
    if got and got[-1] == "":
        got.pop()
    expected = [str(i) for i in range(lines)]
    counts = Counter(got)
    exp_set = set(expected)
    lost = sum(1 for e in expected if counts[e] == 0)
    duplicated = sum(c - 1 for e, c in counts.items() if e in exp_set and c > 1)
    foreign = sum(c for e, c in counts.items() if e not in exp_set)
    # out of order: received expected lines that are not above the previous one (first copies only)
    seen, last, out_of_order = set(), -1, 0
    for g in got:
        if g in exp_set and g not in seen:
            seen.add(g)
            v = int(g)
            if v < last:
                out_of_order += 1
            last = max(last, v)
    return {"received_lines": len(got), "lost": lost, "duplicated": duplicated,
            "foreign_lines": foreign, "out_of_order": out_of_order,
            "exact": got == expected}


def run_one(kernel, code, lines, timeout):
    msgs = {"stream_msgs": 0}

    def count(m):
        if m["msg_type"] == "stream":
            msgs["stream_msgs"] += 1

    rep = kernel.execute(code, timeout=timeout, on_iopub=count)
    res = check_lines(rep.stream_text("stdout"), lines)
    res.update(seconds=rep.seconds, lines_per_s=lines / rep.seconds, stream_msgs=msgs["stream_msgs"],
               stderr=rep.stream_text("stderr")[:500])
    foot = rep.footers()
    res["footer"] = foot[-1] if foot else None
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="1 round: a smoke run")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per cell")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds = min(args.rounds, 1)
    banner(f"stream: {args.lines:,} printed lines, local vs %%gpu, {args.rounds} rounds")

    errors = {}
    kernels = {"local": Kernel("stream-local")}
    try:
        k = kernels["gpu"] = Kernel("stream-gpu")
        k.execute("%load_ext jupyter_gpu", timeout=60)
        on_cleanup(lambda: k.execute("%gpu release", timeout=30, check=False))
        # the cold start outside the measured rounds, and the zygote's preload (torch: seconds of
        # CPU, which took 0.3 s of CPU from each of the first rounds when they raced it) done
        embedded_ready(k)
        k.track_children()
    except (CellError, CellTimeout, RuntimeError) as e:
        errors["gpu"] = f"setup failed: {e}"
        print(f"!! %%gpu variant unavailable: {str(e)[:2000]}", file=sys.stderr, flush=True)
        kernels.pop("gpu", None)

    results = {v: [] for v in kernels}
    for r in range(-args.warmup, args.rounds):
        order = list(kernels) if r % 2 == 0 else list(kernels)[::-1]
        for v in order:
            if v in errors:
                continue
            try:
                res = run_one(kernels[v], cell(args.lines, v == "gpu"), args.lines, args.timeout)
            except (CellError, CellTimeout, RuntimeError) as e:
                errors[v] = f"round {r} failed: {e}"
                print(f"!! {v} dropped at round {r}: {str(e)[:2000]}", file=sys.stderr, flush=True)
                continue
            tag = "warm-up" if r < 0 else f"round {r + 1}"
            print(f"  {tag} {v:<5}: {res['seconds'] * 1000:8.1f} ms  {res['lines_per_s']:10,.0f} lines/s  "
                  f"lost {res['lost']} dup {res['duplicated']} ooo {res['out_of_order']} "
                  f"foreign {res['foreign_lines']}  ({res['stream_msgs']} stream msgs)", flush=True)
            if r >= 0:
                results[v].append(res)

    st = {}
    for v, rs in results.items():
        if rs:
            st[v] = {"lines_per_s": stats([x["lines_per_s"] for x in rs], "lines/s"),
                     "cell_ms": stats([x["seconds"] * 1000 for x in rs], "ms"),
                     "lost_total": sum(x["lost"] for x in rs),
                     "duplicated_total": sum(x["duplicated"] for x in rs),
                     "out_of_order_total": sum(x["out_of_order"] for x in rs),
                     "foreign_total": sum(x["foreign_lines"] for x in rs),
                     "all_exact": all(x["exact"] for x in rs),
                     "stream_msgs_median": sorted(x["stream_msgs"] for x in rs)[len(rs) // 2]}
    print("\nlines/s (execute_request -> reply + idle; higher is better):")
    for v in ("local", "gpu"):
        if v in st:
            print(fmt_stats(v, st[v]["lines_per_s"]))
            print(f"  {'':<28} lost {st[v]['lost_total']}, duplicated {st[v]['duplicated_total']}, "
                  f"out of order {st[v]['out_of_order_total']}, foreign {st[v]['foreign_total']}, "
                  f"exact in every round: {st[v]['all_exact']}")
        else:
            print(f"  {v:<28} NOT MEASURED: {errors.get(v, '?')[:300]}")
    ratios, targets = {}, {}
    if "gpu" in st:
        ratios["gpu_over_local_lines_per_s"] = ratio(st["gpu"]["lines_per_s"]["median"],
                                                     st["local"]["lines_per_s"]["median"])
        ok = st["gpu"]["all_exact"] and not errors.get("gpu")
        targets["gpu_none_lost"] = {"lost": st["gpu"]["lost_total"],
                                    "duplicated": st["gpu"]["duplicated_total"],
                                    "out_of_order": st["gpu"]["out_of_order_total"], "pass": ok}
        print(f"\nratio gpu/local lines/s (medians): {ratios['gpu_over_local_lines_per_s']:.3f}")
    print("\ntargets:")
    print("  gpu: all lines, in order, once   "
          + (verdict(targets["gpu_none_lost"]["pass"]) if targets else "MISS (not measured)"))
    if "local" in st and not st["local"]["all_exact"]:
        print("  note: the LOCAL anchor itself did not deliver every line exactly once")

    write_result("stream", {
        "config": {"rounds": args.rounds, "warmup": args.warmup, "lines": args.lines,
                   "local_cell": cell(args.lines, False), "gpu_cell": cell(args.lines, True)},
        "variants": st, "ratios": ratios, "targets": targets,
        "rounds_detail": {v: [{k: x[k] for k in x if k != "stderr"} for x in rs]
                          for v, rs in results.items()},
        "errors": errors})
    return 0


if __name__ == "__main__":
    run_main(main)
