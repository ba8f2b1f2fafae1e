"""`@jupyter_gpu.function` against its anchors, each in a kernel of its own, the same run (issue 22).

Warm round trip of one call, as a notebook cell (execute_request -> reply + idle), interleaved
round by round:
  remote     `r = f.remote(1)`                       (jupyter-gpu, warm worker, its lane)
  gpu_cell   `%%gpu\\nr = g(1)`                       (the same work as a `%%gpu` cell)
  ray_actor  `r = ray.get(a.f.remote(1))`            (a Ray actor method, local cluster: the anchor)
Map over N trivial items (`x + 1`), a few rounds each:
  map        `r = list(f.map(range(N)))`             (jupyter-gpu: max_workers=2, batches of 256)
  ray_tasks  `r = ray.get([g.remote(x) for x in range(N)])`
  px_map     `r = v.map_sync(g, range(N))`           (ipyparallel LoadBalancedView, 2 engines)

A 1 GiB argument (``--big``, alone):
  big        `size.remote(big)`: a 1 GiB float64 array to a warm worker and its size back (GB/s of
             the cell's round trip), against
  tcp        1 GiB through one loopback TCP connection to a peer process (bench_transfer.TcpAnchor)

Targets: remote <= 1 x ray_actor (median); map items/s >= 2 x ray_tasks' (2 workers each side: Ray's
local cluster has 2 CPUs); big >= 1 x tcp.

    python benchmarks/bench_functions.py [--rounds 200] [--items 10000] [--map-rounds 3] [--quick]
"""
from __future__ import annotations

import argparse
import time

from common import Kernel, banner, fmt_stats, on_cleanup, ratio, run_main, stats, write_result

SETUP = {
    "remote": "%load_ext jupyter_gpu\nimport jupyter_gpu\n@jupyter_gpu.function(gpu='cpu', max_workers=2)\ndef f(x):\n"
              "    return x + 1\nf.remote(0)\nf.remote(0)\nlist(f.map(range(600)))",
    "gpu_cell": "%load_ext jupyter_gpu\ndef g(x):\n    return x + 1",
    "ray_actor": "import ray\nray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)\n"
                 "@ray.remote\nclass A:\n    def f(self, x):\n        return x + 1\n"
                 "@ray.remote\ndef g(x):\n    return x + 1\n"
                 "a = A.remote()\nray.get(a.f.remote(0))\nray.get([g.remote(i) for i in range(100)])",
    "px": "import ipyparallel as ipp\n_rc = ipp.Cluster(n=2).start_and_connect_sync()\n_rc.wait_for_engines(2, timeout=60)\n"
          "v = _rc.load_balanced_view()\ndef g(x):\n    return x + 1\nv.map_sync(g, range(10))",
}
CALL = {"remote": "r = f.remote(1)", "gpu_cell": "%%gpu\nr = g(1)", "ray_actor": "r = ray.get(a.f.remote(1))"}
MAP = {"map": ("remote", "r = list(f.map(range({n})))"),
       "ray_tasks": ("ray_actor", "r = ray.get([g.remote(x) for x in range({n})])"),
       "px_map": ("px", "r = v.map_sync(g, range({n}))")}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--map-rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--big", type=int, metavar="ROUNDS", help="only the 1 GiB argument, this many rounds")
    args = ap.parse_args()
    if args.big:
        return big_argument(args.big)
    if args.quick:
        args.rounds, args.items, args.map_rounds = 30, 2000, 2
    banner("bench_functions: @jupyter_gpu.function vs a Ray actor, Ray tasks, ipyparallel")
    kernels = {}
    for name, code in SETUP.items():
        k = kernels[name] = Kernel(name)
        try:
            k.execute(code, timeout=240)
        except Exception as e:  # ray / ipyparallel missing or unable to start here: said, and left out
            print(f"  {name}: left out ({type(e).__name__}: {str(e)[:200]})")
            k.close()
            del kernels[name]
    if "px" in kernels:
        on_cleanup(lambda: kernels["px"].execute("_rc.cluster.stop_cluster_sync()", timeout=60, check=False))
    calls = {n: [] for n in CALL if n in kernels}
    for n in calls:
        for _ in range(20):
            kernels[n].execute(CALL[n], timeout=60)
    for i in range(args.rounds):
        order = list(calls)
        order = order[i % len(order):] + order[:i % len(order)]
        for n in order:
            calls[n].append(kernels[n].execute(CALL[n], timeout=60).seconds * 1000)
    maps = {n: [] for n, (k, _) in MAP.items() if k in kernels}
    for _ in range(args.map_rounds):
        for n in maps:
            k, code = MAP[n]
            r = kernels[k].execute(code.format(n=args.items), timeout=600)
            maps[n].append(args.items / r.seconds)
    st = {n: stats(xs, "ms") for n, xs in calls.items()}
    st.update({n: stats(xs, "items/s") for n, xs in maps.items()})
    for n, s in st.items():
        print(fmt_stats(n, s))
    med = {n: s["median"] for n, s in st.items()}
    out = {"items": args.items, "workers_in_map": 2, "stats": st,
           "remote_over_ray_actor": ratio(med.get("remote", 0), med.get("ray_actor", 0)),
           "remote_over_gpu_cell": ratio(med.get("remote", 0), med.get("gpu_cell", 0)),
           "map_over_ray_tasks": ratio(med.get("map", 0), med.get("ray_tasks", 0)),
           "map_over_px_map": ratio(med.get("map", 0), med.get("px_map", 0))}
    out["targets"] = {"remote<=ray_actor": out["remote_over_ray_actor"] <= 1.0,
                      "map>=2x_ray_tasks": out["map_over_ray_tasks"] >= 2.0}
    for key in ("remote_over_ray_actor", "remote_over_gpu_cell", "map_over_ray_tasks", "map_over_px_map"):
        print(f"  {key:<24} {out[key]:.3f}")
    write_result("functions", out)
    return 0


def big_argument(rounds: int) -> int:
    from bench_transfer import N, TcpAnchor, gbps

    banner("bench_functions --big: a 1 GiB argument to f.remote vs loopback TCP")
    k = Kernel("big")
    k.execute(f"%load_ext jupyter_gpu\nimport jupyter_gpu, numpy as np\nbig = np.ones({N})\n"
              "@jupyter_gpu.function(gpu='cpu')\ndef size(a):\n    return a.nbytes\nsize.remote(big[:10])", timeout=240)
    tcp = TcpAnchor()
    samples = {"big": [], "tcp": []}
    for i in range(rounds):
        r = k.execute("n = size.remote(big)", timeout=600)
        samples["big"].append(gbps(r.seconds))
        samples["tcp"].append(gbps(tcp.to_peer()))
    st = {n: stats(xs, "GB/s") for n, xs in samples.items()}
    for n, s in st.items():
        print(fmt_stats(n, s))
    out = {"bytes": N * 8, "stats": st, "big_over_tcp": ratio(st["big"]["median"], st["tcp"]["median"])}
    out["targets"] = {"big>=tcp": out["big_over_tcp"] >= 1.0}
    print(f"  big_over_tcp             {out['big_over_tcp']:.3f}")
    write_result("functions-big", out)
    return 0


if __name__ == "__main__":
    run_main(main)
