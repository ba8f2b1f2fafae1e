"""Cold start to the first result of a cell whose worker needs torch (issue 4's first benchmark).

Variants, measured in the same run, interleaved round by round:
  python   `python -c "import torch; float(torch.ones(8).sum())"` as a fresh process
  ray      a Ray actor (local `ray.init()`, started once outside the timing) whose __init__
           imports torch, created and asked for `float(torch.ones(8).sum())`, then killed
  gpu      through a real kernel: `%gpu release` (untimed), then the timed cell
           `%%gpu\\nimport torch\\ny = float(torch.ones(8).sum())` (execute_request -> reply + idle),
           whose worker is forked from the local runtime's pre-imported zygote

Target (DESIGN.md): gpu <= 0.1 x ray.  Ray is an optional dependency (`pip install ray`); without it
that variant is reported as not measured.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

from common import (CellError, run_main, CellTimeout, Kernel, banner, embedded_ready, fmt_stats, on_cleanup, ratio,
                    stats, verdict, write_result)

CELL = "%%gpu\nimport torch\ny = float(torch.ones(8).sum())"
PY = [sys.executable, "-c", "import torch; float(torch.ones(8).sum())"]


def time_python() -> float:
    t0 = time.perf_counter()
    subprocess.run(PY, check=True, timeout=120)
    return time.perf_counter() - t0


class RayAnchor:
    def __init__(self):
        import ray

        self.ray = ray
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        on_cleanup(ray.shutdown)

        @ray.remote(num_cpus=0)
        class TorchActor:
            def __init__(self):
                import torch  # noqa: F401 - the import a GPU worker pays on a cold start

            def run(self):
                import torch

                return float(torch.ones(8).sum())

        self.actor_cls = TorchActor
        self.once()  # Ray's own first start-up (raylet, worker pool) is not a cold start

    def once(self) -> float:
        t0 = time.perf_counter()
        actor = self.actor_cls.remote()
        value = self.ray.get(actor.run.remote(), timeout=120)
        dt = time.perf_counter() - t0
        assert value == 8.0
        self.ray.kill(actor)
        return dt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=180.0)
    ap.add_argument("--quick", action="store_true", help="3 rounds")
    args = ap.parse_args(argv)
    rounds = 3 if args.quick else args.rounds
    banner(f"cold start to first result, torch-importing worker, {rounds} interleaved rounds")
    errors, samples, footers = {}, {"python": [], "ray": [], "gpu": []}, []

    try:
        ray_anchor = RayAnchor()
    except Exception as e:  # not installed, or it cannot start here
        ray_anchor, errors["ray"] = None, f"{type(e).__name__}: {e}"
    kernel = Kernel("coldstart")
    kernel.execute("%load_ext jupyter_gpu", timeout=60)
    on_cleanup(lambda: kernel.execute("%gpu release", timeout=30, check=False))
    embedded_ready(kernel, args.timeout)  # cold starts are forks only once the zygote has imported torch

    for _ in range(rounds):
        samples["python"].append(time_python())
        if ray_anchor is not None:
            samples["ray"].append(ray_anchor.once())
        try:
            kernel.execute("%gpu release", timeout=60)
            rep = kernel.execute(CELL, timeout=args.timeout)
            samples["gpu"].append(rep.seconds)
            footers.extend(f for f in rep.footers() if not f.get("live"))
        except (CellError, CellTimeout) as e:
            errors["gpu"] = str(e)
            break

    st = {k: stats([x * 1000 for x in v], "ms") for k, v in samples.items() if v}
    print("\ncold start to first result:")
    for k, s in st.items():
        print(fmt_stats(k, s))
    nan = float("nan")
    med = {k: st[k]["median"] if k in st else nan for k in samples}
    ratios = {
        "gpu_over_ray": ratio(med["gpu"], med["ray"]),
        "gpu_over_python": ratio(med["gpu"], med["python"]),
        "ray_over_python": ratio(med["ray"], med["python"]),
    }
    methods = sorted({f.get("start_method") for f in footers})
    # False for nan (not measured)
    targets = {"gpu_le_tenth_ray": {"gpu_over_ray": ratios["gpu_over_ray"], "pass": ratios["gpu_over_ray"] <= 0.1}}
    print("\nratios (medians, same run):")
    for k, v in ratios.items():
        print(f"  {k:30s} {round(v, 4)}")
    print(f"  gpu start methods seen: {methods}")
    print(f"\ntargets:\n  gpu <= 0.1 x ray actor     {verdict(targets['gpu_le_tenth_ray']['pass'])}")
    write_result("coldstart", {
        "config": {"rounds": rounds, "cell": CELL, "python": " ".join(PY[1:]),
                   "ray": "actor with `import torch` in __init__, created + first call, then killed"},
        "variants": st, "ratios": ratios, "targets": targets, "start_methods": methods,
        "cold_start_s": [f["timings"]["cold_start"] for f in footers], "errors": errors})
    return 0


if __name__ == "__main__":
    run_main(main)
