"""Run the whole benchmark suite (what `make bench` calls) and summarise its targets.

Each benchmark runs in its own process with a time limit; on overrun it gets SIGTERM (it then shuts
its kernels, ipcluster engines and backend down) and, if still there 60 s later, SIGKILL.
Results: benchmarks/results/<name>.json.  Exit status: 1 if a benchmark crashed or overran, else 0;
a missed target is reported, and fails the run only with --strict.

    python benchmarks/run_all.py [--quick] [--only roundtrip,transfer,stream,coldstart,concurrency,runtimes,docker,messages,widgets,notebooks] [--strict]
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# name -> (script, time limit in s for a full run, for a --quick run)
SUITE = {
    "roundtrip": ("bench_roundtrip.py", 1200, 300),
    "transfer": ("bench_transfer.py", 2400, 900),
    "stream": ("bench_stream.py", 1200, 400),
    "coldstart": ("bench_coldstart.py", 1200, 400),
    "concurrency": ("bench_concurrency.py", 1200, 400),
    "runtimes": ("bench_runtimes.py", 1200, 400),
    "docker": ("bench_docker.py", 900, 300),
    "messages": ("bench_messages.py", 300, 60),
    "widgets": ("bench_widgets.py", 900, 300),
    "notebooks": ("bench_notebooks.py", 1800, 600),
    "sandbox": ("bench_sandbox.py", 1200, 400),
}


def run_one(name, quick, extra):
    script, limit, quick_limit = SUITE[name]
    limit = quick_limit if quick else limit
    cmd = [sys.executable, str(HERE / script)] + (["--quick"] if quick else []) + extra
    print(f"\n>>> {' '.join(cmd[1:])}   (limit {limit} s)", flush=True)
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=HERE)
    try:
        rc = proc.wait(timeout=limit)
        status = "ok" if rc == 0 else f"failed (exit {rc})"
    except subprocess.TimeoutExpired:
        status = f"overran {limit} s"
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    except BaseException:  # Ctrl-C / SIGTERM of run_all: let the benchmark clean up, then go
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    return status, time.time() - t0, t0


def summarise(name, started):
    path = HERE / "results" / f"{name}.json"
    if not path.exists() or path.stat().st_mtime < started:
        return ["  (no result file from this run)"], []
    doc = json.loads(path.read_text())
    lines, misses = [], []
    for k, v in (doc.get("ratios") or {}).items():
        lines.append(f"  {k:<40} {v:10.3f}" if isinstance(v, (int, float)) else f"  {k:<40} {v}")
    for k, t in (doc.get("targets") or {}).items():
        ok = t.get("pass")
        lines.append(f"  target {k:<33} {'PASS' if ok else 'MISS'}")
        if not ok:
            misses.append(f"{name}.{k}")
    for k, e in (doc.get("errors") or {}).items():
        lines.append(f"  error {k}: {str(e).splitlines()[0][:150]}")
        misses.append(f"{name}.{k} (error)")
    return lines, misses


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds: a smoke run of every benchmark")
    ap.add_argument("--only", default=",".join(SUITE), help="comma-separated subset of " + ",".join(SUITE))
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed too")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in SUITE]
    if unknown:
        ap.error(f"unknown benchmark(s): {unknown}")

    outcome = {}
    for name in names:
        outcome[name] = run_one(name, args.quick, [])

    print("\n" + "=" * 78 + "\nsummary (ratios are same-run; see benchmarks/results/*.json)\n" + "=" * 78)
    crashed, missed = [], []
    for name in names:
        status, secs, started = outcome[name]
        print(f"{name}: {status} in {secs:.0f} s")
        if status != "ok":
            crashed.append(name)
        lines, misses = summarise(name, started)
        print("\n".join(lines))
        missed += misses
    if missed:
        print(f"\nmissed targets / errors: {', '.join(missed)}")
    if crashed or (args.strict and missed):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
