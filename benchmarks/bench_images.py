"""Worker environments (issue 23): a `%%gpu --pip` cell against uv itself, and a cached image's cold start.

Variants, measured in the same run, interleaved round by round:
  uv        `uv venv D` + `uv pip install --python D/bin/python PKG` into a fresh directory (uv's own
            cache warm, as ours is: the anchor a user would run by hand)
  pip_cell  through a real kernel: `%gpu release` (untimed), then the timed first cell of a spec never
            built before: `%%gpu --image img` with img = Image.from_kernel().env({"ROUND": n})
            .pip_install(PKG) -- `--pip PKG` with a per-round layer under it, so each round builds
            (resolve against the kernel's environment, install, cold start, run)
  cached    `%gpu release`, then a cell of that (now built) image: its cold start
  default   `%gpu release`, then a plain `%%gpu` cell: the default image's cold start

Targets: pip_cell <= 1.2 x uv; cached <= 1.2 x default.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from common import (CellError, CellTimeout, Kernel, banner, embedded_ready, fmt_stats, on_cleanup, ratio, run_main,
                    stats, verdict, write_result)

PKG = "toolz==0.12.1"  # tiny, pure Python, not among the kernel's packages
UV = os.path.join(os.path.dirname(sys.executable), "uv")


def time_uv(root: str, n: int) -> float:
    d = os.path.join(root, f"uv-{n}")
    t0 = time.perf_counter()
    subprocess.run([UV, "venv", "--quiet", d], check=True, timeout=120)
    subprocess.run([UV, "pip", "install", "--quiet", "--python", os.path.join(d, "bin", "python"), PKG], check=True,
                   timeout=120)
    dt = time.perf_counter() - t0
    shutil.rmtree(d, ignore_errors=True)
    return dt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="3 rounds")
    args = ap.parse_args(argv)
    rounds = 3 if args.quick else args.rounds
    banner(f"worker environments: --pip {PKG} vs uv, cached image vs default cold start, {rounds} rounds")
    tmp = tempfile.mkdtemp(prefix="bench-images-")
    on_cleanup(lambda: shutil.rmtree(tmp, ignore_errors=True))
    os.environ["XDG_CACHE_HOME"] = os.path.join(tmp, "cache")  # the backend's build cache: fresh (uv's own: warm)
    time_uv(tmp, -1)  # uv's own cache warm, as the kernel's first build leaves it for ours
    kernel = Kernel("images")
    kernel.execute("%load_ext jupyter_gpu", timeout=60)
    on_cleanup(lambda: kernel.execute("%gpu release", timeout=30, check=False))
    embedded_ready(kernel, 180)
    kernel.execute("import jupyter_gpu", timeout=30)
    samples = {"uv": [], "pip_cell": [], "cached": [], "default": []}
    errors, builds, methods = {}, [], set()
    for n in range(rounds):
        samples["uv"].append(time_uv(tmp, n))
        try:
            kernel.execute(f"img = jupyter_gpu.Image.from_kernel().env({{'ROUND': '{n}-{time.time()}'}}).pip_install({PKG!r})\n"
                           "%gpu release", timeout=60)
            rep = kernel.execute("%%gpu --image img\nimport toolz\ny = toolz.identity(1)", timeout=300)
            samples["pip_cell"].append(rep.seconds)
            fs = [f for f in rep.footers() if not f.get("live")]
            builds += [f["timings"].get("build", 0.0) for f in fs]
            kernel.execute("%gpu release", timeout=60)
            rep = kernel.execute("%%gpu --image img\ny = 2", timeout=300)  # (the same cell as the default one)
            samples["cached"].append(rep.seconds)
            methods.update(f.get("start_method") for f in rep.footers() if not f.get("live"))
            kernel.execute("%gpu release", timeout=60)
            rep = kernel.execute("%%gpu\ny = 3", timeout=300)
            samples["default"].append(rep.seconds)
        except (CellError, CellTimeout) as e:
            errors["gpu"] = str(e)
            break
    st = {k: stats([x * 1000 for x in v], "ms") for k, v in samples.items() if v}
    print("\nfirst result:")
    for k, s in st.items():
        print(fmt_stats(k, s))
    nan = float("nan")
    med = {k: st[k]["median"] if k in st else nan for k in samples}
    ratios = {"pip_cell_over_uv": ratio(med["pip_cell"], med["uv"]),
              "cached_over_default": ratio(med["cached"], med["default"])}
    targets = {"pip_cell_le_1.2_uv": {"ratio": ratios["pip_cell_over_uv"], "pass": ratios["pip_cell_over_uv"] <= 1.2},
               "cached_le_1.2_default": {"ratio": ratios["cached_over_default"],
                                         "pass": ratios["cached_over_default"] <= 1.2}}
    print("\nratios (medians, same run):")
    for k, v in ratios.items():
        print(f"  {k:30s} {round(v, 3)}")
    print(f"  builds (s): {[round(b, 2) for b in builds]}; cached cold starts by: {sorted(m for m in methods if m)}")
    print("\ntargets:")
    print(f"  pip cell <= 1.2 x uv          {verdict(targets['pip_cell_le_1.2_uv']['pass'])}")
    print(f"  cached <= 1.2 x default       {verdict(targets['cached_le_1.2_default']['pass'])}")
    write_result("images", {"config": {"rounds": rounds, "package": PKG}, "variants": st, "ratios": ratios,
                            "targets": targets, "build_s": builds, "errors": errors,
                            "cached_start_methods": sorted(m for m in methods if m)})
    return 0


if __name__ == "__main__":
    run_main(main)
