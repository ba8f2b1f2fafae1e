"""The benchmarks on an earlier checkout and on this one, alternated run by run (A B A B ...).

Each benchmark script already measures its anchors (local cell, loopback TCP, Ray...) in the same
run, so its *ratios* are comparable between runs; running the earlier code's own script (from its
worktree, its packages first on PYTHONPATH for the kernel, the backend and the workers) and this
code's, alternately, puts both under the same machine load.  `bench_roundtrip.py --before DIR`
interleaves the two round by round inside one run; this covers the others.

    git worktree add ../baseline <commit>
    python benchmarks/ab_before.py --before ../baseline [--only transfer,stream,coldstart] [--repeats 2] [--quick]
                                   [--scripts each|this]

Writes results/ab_before.json: per benchmark and ratio, the values of each run, before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import banner, write_result

HERE = Path(__file__).resolve().parent
SCRIPTS = {"transfer": "bench_transfer.py", "stream": "bench_stream.py", "coldstart": "bench_coldstart.py",
           "concurrency": "bench_concurrency.py", "runtimes": "bench_runtimes.py", "docker": "bench_docker.py",
           "roundtrip": "bench_roundtrip.py", "notebooks": "bench_notebooks.py", "sync": "bench_sync.py"}


def run(tree: Path, name: str, quick: bool, limit: float, env: dict, extra: tuple = ()) -> dict:
    bench_dir = tree / "benchmarks"
    result = bench_dir / "results" / f"{name}.json"
    saved = result.read_bytes() if result.exists() else None
    cmd = [sys.executable, str(bench_dir / SCRIPTS[name])] + (["--quick"] if quick else []) + list(extra)
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, cwd=bench_dir, env=env, timeout=limit, capture_output=True, text=True)
        ok = proc.returncode == 0
        tail = (proc.stdout + proc.stderr)[-600:]
    except subprocess.TimeoutExpired:
        ok, tail = False, f"overran {limit} s"
    try:
        doc = json.loads(result.read_text()) if result.exists() and result.stat().st_mtime >= t0 else {}
    finally:  # the tree's recorded result stays as it was
        if saved is not None:
            result.write_bytes(saved)
    return {"ok": ok and bool(doc), "ratios": doc.get("ratios", {}), "targets": doc.get("targets", {}),
            "errors": doc.get("errors", {}), "tail": "" if ok else tail}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, metavar="DIR", help="a worktree of the earlier commit")
    ap.add_argument("--only", default="transfer,stream,coldstart")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--limit", type=float, default=2400.0, help="seconds per benchmark run")
    ap.add_argument("--scripts", choices=("each", "this"), default="each",
                    help="each: every side runs its own benchmark scripts; this: both run this checkout's "
                         "(the same measurement of two codes, its PYTHONPATH picking the code)")
    ap.add_argument("--args", default="", help="more arguments for each benchmark script, e.g. '--rounds 9'")
    args = ap.parse_args(argv)
    before = Path(args.before).resolve()
    names = [n for n in args.only.split(",") if n]
    banner(f"before ({before}) and after ({HERE.parent}), alternated: {', '.join(names)} x {args.repeats}")
    paths = [str(before), str(before / "backend"), str(before / "worker_image")]
    envs = {"before": {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}, "after": dict(os.environ)}
    trees = {"before": before if args.scripts == "each" else HERE.parent, "after": HERE.parent}
    runs = {n: {"before": [], "after": []} for n in names}
    for i in range(args.repeats):
        for name in names:
            for side in (("before", "after") if i % 2 == 0 else ("after", "before")):
                print(f"run {i + 1}: {name} {side} ...", flush=True)
                r = run(trees[side], name, args.quick, args.limit, envs[side], tuple(args.args.split()))
                runs[name][side].append(r)
                if not r["ok"]:
                    print(f"  !! failed: {r['tail']}", flush=True)
    table = {}
    print(f"\n{'benchmark.ratio':<52} {'before':>10} {'after':>10} {'after/before':>13}")
    for name in names:
        keys = sorted({k for side in runs[name].values() for r in side for k, v in r["ratios"].items()
                       if isinstance(v, (int, float))})
        for k in keys:
            b = [r["ratios"][k] for r in runs[name]["before"] if isinstance(r["ratios"].get(k), (int, float))]
            a = [r["ratios"][k] for r in runs[name]["after"] if isinstance(r["ratios"].get(k), (int, float))]
            if not a or not b:
                continue
            mb, ma = statistics.median(b), statistics.median(a)
            table[f"{name}.{k}"] = {"before": b, "after": a, "before_median": mb, "after_median": ma,
                                    "after_over_before": ma / mb if mb else None}
            rel = f"{ma / mb:13.3f}" if mb else f"{'-':>13}"
            print(f"{name + '.' + k:<52} {mb:10.3f} {ma:10.3f} {rel}")
    write_result("ab_before", {"before": str(before), "repeats": args.repeats, "quick": args.quick, "scripts": args.scripts,
                               "args": args.args,
                               "runs": runs, "ratios_before_after": table})
    return 0


if __name__ == "__main__":
    sys.exit(main())
