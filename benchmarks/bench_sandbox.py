"""The local runtime's per-user sandbox (issue 24): what it costs a cold start and a warm cell.

Two `jupyter-gpu serve` backends on the local runtime in the same run, their zygotes having
imported torch: `plain` (one token: no sandbox) and `sandboxed` (`--users`: each worker enters its
sandbox as it is forked, jupyter_gpu_worker/sandbox.py, and becomes its user's uid at its first
cell).  Per round, interleaved: a cold cell on each (`%gpu release` first; the timed cell
`import torch; y = float(torch.ones(8).sum())`, request to `done`), and a Ray actor whose __init__
imports torch (the anchor of bench_coldstart.py); then warm cells (`x = 1`) on each.  Both backends
are spoken to raw (the kernel's client, no lane), so the warm figures compare the same path.

Targets: sandboxed cold <= 1.5 x plain cold; sandboxed cold <= 0.1 x the Ray actor; the warm round
trip unchanged (sandboxed / plain ~ 1).  Needs root (the sandbox does); otherwise says so.
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

from common import banner, fmt_stats, on_cleanup, ratio, run_main, stats, verdict, write_result

COLD = "import torch\ny = float(torch.ones(8).sum())"


def start(tmp: str, name: str, *args: str) -> str:
    info = os.path.join(tmp, f"{name}.json")
    proc = subprocess.Popen([sys.executable, "-m", "jupyter_gpu_backend", "--runtime-file", info, "--keep-warm", "600",
                             "--ledger", os.path.join(tmp, f"{name}.sqlite3"), *args],
                            stdout=open(os.path.join(tmp, f"{name}.log"), "wb"), stderr=subprocess.STDOUT)
    on_cleanup(lambda: (proc.terminate(), proc.wait(60)))
    deadline = time.monotonic() + 120
    while not os.path.exists(info):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the {name} backend did not start; see {tmp}/{name}.log")
        time.sleep(0.05)  # another process's file: nothing to wait on but the file
    with open(info) as f:
        return json.load(f)["url"]


def ready(url: str, token: str) -> None:
    """Until its zygote has imported torch (the backend's own wait, not a sleep)."""
    req = urllib.request.Request(f"{url}/api/runtime?wait=180", headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=200) as r:
        assert json.load(r)["ready"]


class Session:
    def __init__(self, url: str, token: str, name: str):
        from jupyter_gpu._client.connection import BackendClient

        self.client = BackendClient(url, token, f"bench-{name}-{os.getpid()}")
        self.n = 0

    def cell(self, code: str) -> tuple[float, dict]:
        from jupyter_gpu._wire import messages

        self.n += 1
        cell = f"c{self.n}"
        t0 = time.perf_counter()
        self.client.send({"type": messages.EXECUTE, "cell": cell, "code": code, "gpu": "cpu", "inputs": {},
                          "keep": {}, "binds": []})
        while True:
            msg = self.client.recv(timeout=180)
            assert msg is not None, f"no end of {cell}"
            if msg.type == messages.FAILURE:
                raise RuntimeError(msg.header)
            if msg.type == messages.DONE and msg.header.get("cell") == cell:
                assert msg.header.get("status") == "ok", msg.header
                return time.perf_counter() - t0, msg.header

    def release(self) -> None:
        from jupyter_gpu._wire import messages

        self.client.send({"type": messages.RELEASE})
        while True:
            msg = self.client.recv(timeout=60)
            assert msg is not None
            if msg.type == messages.STATUS_REPLY:
                return


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warm", type=int, default=200, help="warm cells per backend per round")
    ap.add_argument("--quick", action="store_true", help="3 rounds, 50 warm cells")
    args = ap.parse_args(argv)
    rounds, warm_n = (3, 50) if args.quick else (args.rounds, args.warm)
    banner(f"the local runtime's sandbox: cold start and warm cell, {rounds} interleaved rounds")
    if os.geteuid() != 0:
        print("not measured: the sandbox needs the backend to run as root")
        write_result("sandbox", {"errors": {"sandboxed": "not root"}})
        return 0
    tmp = tempfile.mkdtemp(prefix="bench-sandbox-")
    users = os.path.join(tmp, "users.json")
    with open(users, "w") as f:
        json.dump({"alice": "token-alice"}, f)
    os.chmod(users, 0o600)
    urls = {"plain": start(tmp, "plain", "--token", "token-plain"), "sandboxed": start(tmp, "sandboxed", "--users", users)}
    tokens = {"plain": "token-plain", "sandboxed": "token-alice"}
    for name, url in urls.items():
        ready(url, tokens[name])
    sessions = {name: Session(urls[name], tokens[name], name) for name in urls}
    from bench_coldstart import RayAnchor

    errors, cold, warm, ray_s = {}, {n: [] for n in urls}, {n: [] for n in urls}, []
    try:
        ray_anchor = RayAnchor()
    except Exception as e:
        ray_anchor, errors["ray"] = None, f"{type(e).__name__}: {e}"
    for name, s in sessions.items():  # each backend's first worker (its log, its start-up) is not a round
        s.cell(COLD)
    for _ in range(rounds):
        for name, s in sessions.items():
            s.release()
            dt, done = s.cell(COLD)
            assert done.get("cold"), done
            cold[name].append(dt)
        if ray_anchor is not None:
            ray_s.append(ray_anchor.once())
        for name, s in sessions.items():
            for _ in range(warm_n):
                warm[name].append(s.cell("x = 1")[0])
    st = {f"cold_{n}": stats([x * 1000 for x in v], "ms") for n, v in cold.items()}
    st.update({f"warm_{n}": stats([x * 1e6 for x in v], "us") for n, v in warm.items()})
    if ray_s:
        st["cold_ray_actor"] = stats([x * 1000 for x in ray_s], "ms")
    print()
    for k, s in st.items():
        print(fmt_stats(k, s))
    med = {k: v["median"] for k, v in st.items()}
    ratios = {"cold_sandboxed_over_plain": ratio(med["cold_sandboxed"], med["cold_plain"]),
              "cold_sandboxed_over_ray": ratio(med["cold_sandboxed"], med.get("cold_ray_actor", float("nan"))),
              "warm_sandboxed_over_plain": ratio(med["warm_sandboxed"], med["warm_plain"])}
    targets = {"cold_le_1.5x_plain": ratios["cold_sandboxed_over_plain"] <= 1.5,
               "cold_le_0.1x_ray": ratios["cold_sandboxed_over_ray"] <= 0.1,
               "warm_unchanged_le_1.1x": ratios["warm_sandboxed_over_plain"] <= 1.1}
    print("\nratios (medians, same run):")
    for k, v in ratios.items():
        print(f"  {k:30s} {round(v, 4)}")
    print("\ntargets:")
    for k, ok in targets.items():
        print(f"  {k:30s} {verdict(ok)}")
    write_result("sandbox", {"config": {"rounds": rounds, "warm_cells": warm_n, "cold_cell": COLD},
                             "variants": st, "ratios": ratios, "targets": targets, "errors": errors})
    return 0


if __name__ == "__main__":
    run_main(main)
