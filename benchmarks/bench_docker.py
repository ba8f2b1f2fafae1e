"""The `docker` runtime: cold start to first result, and a warm cell, against same-run anchors (issue 4).

Variants, interleaved round by round:
  cold  docker_run     `docker run --rm --network host --init IMG python3 -c pass` (Debian's docker CLI),
                       the same worker image doing nothing: what any container start costs here
        docker_cell    through a real kernel on a `jupyter-gpu serve --runtime docker`: `%gpu release`
                       (untimed), then the timed cell `%%gpu\\ny = 1 + 1` (execute_request -> reply +
                       idle), whose worker is a fresh container of that image
  warm  local_runtime  `%%gpu\\nx = 1` on a `jupyter-gpu serve --runtime local`
        docker         `%%gpu\\nx = 1` on the docker backend (a warm container)

The image is the one the runtime would use: built (only if its inputs changed) on
$JUPYTER_GPU_DOCKER_BASE, else on the local debootstrap base when it exists.  Without a Docker
Engine nothing is measured and the reason is recorded.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time

from common import (CellError, CellTimeout, Kernel, banner, fmt_stats, ratio, run_main, serve_backend, stats,
                    write_result)

TOKEN = "bench-docker"
COLD_CELL = "%%gpu\ny = 1 + 1"
WARM_CELL = "%%gpu\nx = 1"
DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else (shutil.which("docker") or "docker")


def worker_image() -> str:
    import docker

    from jupyter_gpu_backend.runtimes import docker_image

    client = docker.from_env()
    base = os.environ.get("JUPYTER_GPU_DOCKER_BASE")
    if not base:
        try:
            client.images.get(docker_image.LOCAL_BASE)
            base = docker_image.LOCAL_BASE
        except docker.errors.ImageNotFound:
            base = None
    tag, _ = docker_image.ensure_worker_image(client, base)
    return tag


def time_docker_run(image: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([DOCKER, "run", "--rm", "--network", "host", "--init", image, "python3", "-c", "pass"],
                   check=True, timeout=120, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15, help="cold rounds")
    ap.add_argument("--warm-rounds", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="3 cold and 50 warm rounds")
    args = ap.parse_args(argv)
    cold_rounds, warm_rounds = (3, 50) if args.quick else (args.rounds, args.warm_rounds)
    banner(f"docker runtime: cold start ({cold_rounds} rounds) and warm `x = 1` ({warm_rounds} rounds)")
    errors, footers = {}, []
    try:
        image = worker_image()
    except Exception as e:  # no engine, no base image
        errors["docker"] = f"{type(e).__name__}: {e}"
        print(f"not measured: {errors['docker']}")
        write_result("docker", {"config": {}, "variants": {}, "ratios": {}, "targets": {}, "errors": errors})
        return 0
    os.environ["JUPYTER_GPU_DOCKER_IMAGE"] = image  # the backend uses this image as it is
    tmp = tempfile.mkdtemp(prefix="jg-bench-docker-")
    kernels = {}
    for runtime in ("docker", "local"):
        _, url = serve_backend(tmp, TOKEN, runtime)
        k = Kernel(f"docker-{runtime}", env=dict(os.environ, JUPYTER_GPU_URL=url, JUPYTER_GPU_TOKEN=TOKEN))
        k.execute("%load_ext jupyter_gpu", timeout=60)
        kernels[runtime] = k
    time_docker_run(image)  # the image's first start (page cache) is not what is compared

    cold = {"docker_run": [], "docker_cell": []}
    for _ in range(cold_rounds):
        cold["docker_run"].append(time_docker_run(image))
        try:
            kernels["docker"].execute("%gpu release", timeout=60)
            rep = kernels["docker"].execute(COLD_CELL, timeout=180)
            cold["docker_cell"].append(rep.seconds)
            footers.extend(f for f in rep.footers() if not f.get("live"))
        except (CellError, CellTimeout) as e:
            errors["docker_cell"] = str(e)
            break

    warm = {"local_runtime": [], "docker": []}
    for name in warm:
        for _ in range(20):  # a warm worker (and its imports) first
            kernels["local" if name == "local_runtime" else "docker"].execute(WARM_CELL, timeout=180)
    for _ in range(warm_rounds):
        for name in warm:
            warm[name].append(kernels["local" if name == "local_runtime" else "docker"].execute(WARM_CELL, timeout=60).seconds)

    st = {f"cold_{k}": stats([x * 1000 for x in v], "ms") for k, v in cold.items() if v}
    st.update({f"warm_{k}": stats([x * 1000 for x in v], "ms") for k, v in warm.items() if v})
    print("\nround trip (same run):")
    for k, s in st.items():
        print(fmt_stats(k, s))
    nan = float("nan")
    med = {k: s["median"] for k, s in st.items()}
    ratios = {
        "cold_docker_cell_over_docker_run": ratio(med.get("cold_docker_cell", nan), med.get("cold_docker_run", nan)),
        "cold_docker_cell_minus_docker_run_ms": med.get("cold_docker_cell", nan) - med.get("cold_docker_run", nan),
        "warm_docker_over_local_runtime": ratio(med.get("warm_docker", nan), med.get("warm_local_runtime", nan)),
        "warm_docker_minus_local_runtime_ms": med.get("warm_docker", nan) - med.get("warm_local_runtime", nan),
    }
    print("ratios (medians): " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    for k, e in errors.items():
        print(f"not measured: {k}: {e}")
    write_result("docker", {
        "config": {"cold_rounds": cold_rounds, "warm_rounds": warm_rounds, "image": image,
                   "anchor": f"docker run --rm --network host --init IMG python3 -c pass ({DOCKER})",
                   "cold_cell": COLD_CELL, "warm_cell": WARM_CELL},
        "variants": st, "ratios": ratios, "targets": {},
        "footer_cold_start_s": [f["timings"].get("cold_start") for f in footers],
        "errors": errors})
    return 0


if __name__ == "__main__":
    run_main(main)
