"""Many kernels at once against one backend (issue 4): cell latency p50/p99 and backend memory.

N kernels (default 20) each run R warm cells back to back, all kernels at the same time, against
one `jupyter-gpu serve` (the local runtime; one worker per kernel).  The anchor, in the same run:
the same N kernels running the same cell locally, all at the same time.  Reported: p50/p99 of the
cell round trip (execute_request -> reply + idle) for both, the backend's resident memory before
the kernels connect, with all of them warm, and per kernel.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import threading

import psutil
from common import Kernel, banner, fmt_stats, ratio, run_main, serve_backend, stats, verdict, write_result

TOKEN = "bench-concurrency"
CELL = {"local": "x = 1", "gpu": "%%gpu\nx = 1"}


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def run_all(kernels, code: str, rounds: int, timeout: float) -> tuple[list, list]:
    """Every kernel runs `code` `rounds` times, all kernels at once; returns (seconds, errors)."""
    samples, errors, lock = [], [], threading.Lock()
    start = threading.Barrier(len(kernels))

    def drive(k):
        start.wait()
        for _ in range(rounds):
            try:
                rep = k.execute(code, timeout=timeout)
            except Exception as e:  # a failed cell is reported, the others go on
                with lock:
                    errors.append(f"{k.name}: {type(e).__name__}: {str(e)[:200]}")
                return
            with lock:
                samples.append(rep.seconds)

    threads = [threading.Thread(target=drive, args=(k,)) for k in kernels]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return samples, errors


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernels", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=30, help="cells per kernel, per variant")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--quick", action="store_true", help="5 kernels, 10 rounds")
    args = ap.parse_args(argv)
    n, rounds = (5, 10) if args.quick else (args.kernels, args.rounds)
    banner(f"concurrency: {n} kernels at once against one backend, {rounds} cells each")
    tmp = tempfile.mkdtemp(prefix="jg-bench-concurrency-")
    backend, url = serve_backend(tmp, TOKEN)
    mem = {"backend_idle_mb": rss_mb(backend.pid)}
    env = dict(os.environ, JUPYTER_GPU_URL=url, JUPYTER_GPU_TOKEN=TOKEN)
    kernels = [Kernel(f"conc-{i}", env=env) for i in range(n)]
    for k in kernels:
        k.execute("%load_ext jupyter_gpu", timeout=60)
    warm, errs = run_all(kernels, CELL["gpu"], 3, args.timeout)  # every kernel gets its warm worker
    if errs:
        raise SystemExit("warm-up failed: " + "; ".join(errs[:3]))
    mem["backend_warm_mb"] = rss_mb(backend.pid)
    samples, errors = {}, {}
    for variant in ("local", "gpu"):  # same kernels, same concurrency, one after the other
        samples[variant], e = run_all(kernels, CELL[variant], rounds, args.timeout)
        if e:
            errors[variant] = e[:5]
    mem["backend_after_mb"] = rss_mb(backend.pid)
    mem["backend_per_kernel_mb"] = (mem["backend_after_mb"] - mem["backend_idle_mb"]) / n
    mem["workers"] = len(psutil.Process(backend.pid).children(recursive=True))

    st = {k: stats([x * 1000 for x in v], "ms") for k, v in samples.items() if v}
    print(f"\ncell round trip with {n} kernels running at once:")
    for k, s in st.items():
        print(fmt_stats(k, s))
    nan = float("nan")
    med = {k: st[k]["median"] if k in st else nan for k in CELL}
    p99 = {k: st[k]["p99"] if k in st else nan for k in CELL}
    ratios = {"gpu_over_local_p50": ratio(med["gpu"], med["local"]), "gpu_over_local_p99": ratio(p99["gpu"], p99["local"]),
              "gpu_minus_local_p50_ms": med["gpu"] - med["local"]}
    print("\nbackend memory (RSS, MiB): " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                                                      for k, v in mem.items()))
    print("ratios: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    targets = {"no_failed_cells": {"pass": not errors, "errors": errors}}
    print(f"targets:\n  every cell of every kernel ok   {verdict(not errors)}")
    write_result("concurrency", {
        "config": {"kernels": n, "rounds": rounds, "cells": CELL, "backend": "jupyter-gpu serve, local runtime"},
        "variants": st, "ratios": ratios, "memory_mb": mem, "targets": targets, "errors": errors})
    return 0


if __name__ == "__main__":
    run_main(main)
