"""The embedded backend's start (issue 19): its process started as the kernel starts it
(``python -m jupyter_gpu_backend --embedded --runtime-file F``) until ``/api/health`` answers, which
is what a notebook's first ``%%gpu`` cell waits for.  Anchor: the same on the code of an earlier
checkout (``--before DIR``, its packages first on PYTHONPATH), alternated run by run; and a bare
``python -c pass`` (the interpreter's own start, the floor).

    python benchmarks/bench_backend_start.py --before ../baseline [--runs 12]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import banner, fmt_stats, ratio, run_main, stats, write_result

HERE = Path(__file__).resolve().parent


def start_once(env: dict) -> float:
    d = tempfile.mkdtemp(prefix="jg-bench-start-")
    info = os.path.join(d, "backend.json")
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "jupyter_gpu_backend", "--embedded", "--runtime-file", info],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while True:
            try:
                with open(info) as f:
                    j = json.load(f)
                break
            except (OSError, ValueError):
                if p.poll() is not None:
                    raise RuntimeError(f"the backend exited with {p.returncode}") from None
                time.sleep(0.002)  # a file another process writes: no event to wait on
        req = urllib.request.Request(j["url"] + "/api/health", headers={"Authorization": f"token {j['token']}"})
        urllib.request.urlopen(req, timeout=30).read()
        return time.perf_counter() - t0
    finally:
        p.terminate()
        p.wait(30)


def floor_once() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, metavar="DIR", help="a worktree of the earlier commit")
    ap.add_argument("--runs", type=int, default=12)
    args = ap.parse_args()
    banner("bench_backend_start: the embedded backend's process start -> /api/health answered")
    tree = os.path.abspath(args.before)
    envs = {"after": dict(os.environ),
            "before": {**os.environ, "PYTHONPATH": os.pathsep.join([tree, f"{tree}/backend", f"{tree}/worker_image"])}}
    samples = {"after": [], "before": [], "python": []}
    start_once(envs["after"]), start_once(envs["before"])  # (warm-up: disk caches)
    for i in range(args.runs):
        for name in ("after", "before") if i % 2 == 0 else ("before", "after"):
            samples[name].append(start_once(envs[name]))
        samples["python"].append(floor_once())
    st = {k: stats(v, "s") for k, v in samples.items()}
    for k, s in st.items():
        print(fmt_stats(k, s))
    out = {"before": tree, "stats": st,
           "ratios": {"after_over_before": ratio(st["after"]["median"], st["before"]["median"]),
                      "after_minus_python_s": st["after"]["median"] - st["python"]["median"],
                      "before_minus_python_s": st["before"]["median"] - st["python"]["median"]}}
    print(f"  after / before {out['ratios']['after_over_before']:.3f}")
    write_result("backend_start", out)
    return 0


if __name__ == "__main__":
    run_main(main)
