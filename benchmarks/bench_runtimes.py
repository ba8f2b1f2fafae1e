"""Warm `%%gpu x = 1` on each runtime, against the local runtime and a local cell (issue 4).

One kernel per variant, rounds interleaved: a local cell (anchor); `%%gpu` on a `jupyter-gpu serve
--runtime local`; `%%gpu` on a `jupyter-gpu serve --runtime ray` (a local Ray cluster; skipped,
and said so, without ray).  Round trip = execute_request -> reply + idle.
"""
from __future__ import annotations

import argparse
import os
import tempfile

from common import Kernel, banner, fmt_stats, ratio, run_main, serve_backend, stats, write_result

TOKEN = "bench-runtimes"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="50 rounds")
    args = ap.parse_args(argv)
    rounds = 50 if args.quick else args.rounds
    banner(f"warm `x = 1` on each runtime, {rounds} interleaved rounds")
    tmp = tempfile.mkdtemp(prefix="jg-bench-runtimes-")
    kernels, errors = {"local_cell": Kernel("rt-local-cell")}, {}
    for runtime in ("local", "ray"):
        try:
            _, url = serve_backend(tmp, TOKEN, runtime)
        except Exception as e:  # ray not installed, or it cannot start here
            errors[runtime] = f"{type(e).__name__}: {e}"
            continue
        k = Kernel(f"rt-{runtime}", env=dict(os.environ, JUPYTER_GPU_URL=url, JUPYTER_GPU_TOKEN=TOKEN))
        k.execute("%load_ext jupyter_gpu", timeout=60)
        for _ in range(20):  # cold start, then warm
            k.execute("%%gpu\nx = 1", timeout=180)
        kernels[runtime] = k
    code = {name: "x = 1" if name == "local_cell" else "%%gpu\nx = 1" for name in kernels}
    samples = {name: [] for name in kernels}
    for _ in range(rounds):
        for name, k in kernels.items():
            samples[name].append(k.execute(code[name], timeout=60).seconds)
    st = {k: stats([x * 1000 for x in v], "ms") for k, v in samples.items() if v}
    print("\nwarm round trip:")
    for k, s in st.items():
        print(fmt_stats(k, s))
    nan = float("nan")
    med = {k: st[k]["median"] if k in st else nan for k in ("local_cell", "local", "ray")}
    ratios = {"ray_over_local_runtime": ratio(med["ray"], med["local"]),
              "local_runtime_minus_local_cell_ms": med["local"] - med["local_cell"],
              "ray_minus_local_cell_ms": med["ray"] - med["local_cell"]}
    print("ratios: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    for k, e in errors.items():
        print(f"not measured: {k}: {e}")
    write_result("runtimes", {"config": {"rounds": rounds, "code": code}, "variants": st, "ratios": ratios,
                              "targets": {}, "errors": errors})
    return 0


if __name__ == "__main__":
    run_main(main)
