"""1 GiB array in and out of a `%%gpu` cell, against loopback TCP between two processes.

Anchor (same run, interleaved with the kernel rounds): this process and a peer process (both with a
pre-touched 1 GiB buffer) on one loopback TCP connection; `sendall` of the whole buffer on one side,
`recv_into` a preallocated buffer on the other, in BOTH directions each round ("tcp_to_peer",
"tcp_from_peer").  The targets compare with the median over both directions (loopback is symmetric;
both are reported).

Through a real kernel (jupyter_client), `a` = local float64 array of 2**27 elements (1 GiB):
  in   untimed `a[0] = i` (so `a` must be re-sent), timed `%%gpu --no-out` cell `n = a.size`
  out  untimed `b = None` (frees the last copy), timed `%%gpu --out b` cell `base[0] = i; b = base`,
       where `base = np.ones(2**27)` was made on the worker once, outside the timed region; the
       cell does no big compute, and bumping base[0] makes every round's `b` a new value.
GB/s = 2**30 bytes / cell wall time (execute_request -> reply + idle) / 1e9: nothing subtracted.
The footer's own timings and transfer bytes are recorded per round as well.
Unchanged re-send: the `in` cell again with `a` untouched; `jupyter_gpu.last_cell()["transfer"]
["sent_bytes"]` must be <= 1024.  Targets: in and out each >= 0.5 x loopback TCP.

The same rounds with a 1 GiB float64 torch CPU tensor (`ta` in, `tb` out; `torch_in`/`torch_out`,
when torch is installed; `--no-torch` skips them): torch tensors travel by jupyter_gpu/_wire/tensors.py,
not by torch's own pickle.  After them, two unchanged re-sends: `ta` untouched, and `tb`, which
came back from the worker, read by a later cell (each must send <= 1 KiB).

    python benchmarks/bench_transfer.py [--rounds 5] [--warmup 1] [--quick]
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time

import numpy as np

from common import (CellError, run_main, CellTimeout, Kernel, banner, fmt_stats, kill_tree, on_cleanup, ratio,
                    stats, verdict, write_result)

N = 2**27
NBYTES = N * 8  # 1 GiB


# ----------------------------------------------------------------------------- loopback TCP
def _recv_exact(sock, view):
    got, n = 0, len(view)
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if not k:
            raise ConnectionError("peer closed")
        got += k


def peer_main(port):
    """The other process: follows commands S (send the buffer), R (receive it, ack K), Q (quit)."""
    buf = np.ones(N)  # touched
    view = memoryview(buf).cast("B")
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(b"H")
    while True:
        cmd = s.recv(1)
        if cmd == b"S":
            s.sendall(view)
        elif cmd == b"R":
            _recv_exact(s, view)
            s.sendall(b"K")
        else:
            return


class TcpAnchor:
    def __init__(self):
        self.buf = np.ones(N)
        self.view = memoryview(self.buf).cast("B")
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        lsock.settimeout(60)
        self.proc = subprocess.Popen([sys.executable, __file__, "--tcp-peer", str(lsock.getsockname()[1])])
        on_cleanup(self.close)
        self.sock, _ = lsock.accept()
        lsock.close()
        self.sock.settimeout(120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert self.sock.recv(1) == b"H"

    def from_peer(self):
        t0 = time.perf_counter()
        self.sock.sendall(b"S")
        _recv_exact(self.sock, self.view)
        return time.perf_counter() - t0

    def to_peer(self):
        t0 = time.perf_counter()
        self.sock.sendall(b"R")
        self.sock.sendall(self.view)
        if self.sock.recv(1) != b"K":
            raise ConnectionError("no ack from peer")
        return time.perf_counter() - t0

    def close(self):
        try:
            self.sock.sendall(b"Q")
            self.sock.close()
            self.proc.wait(timeout=10)
        except Exception:
            import psutil
            kill_tree([psutil.Process(self.proc.pid)] if self.proc.poll() is None else [])


# ----------------------------------------------------------------------------- kernel side
def gbps(seconds):
    return NBYTES / seconds / 1e9


# the names of each kind's rounds: (local input, remote base, output)
KINDS = {"gpu": ("a", "base", "b"), "torch": ("ta", "tbase", "tb")}


class GpuTransfer:
    def __init__(self, timeout, with_torch):
        self.t = timeout
        self.k = Kernel("transfer")
        self.opt = f"--timeout {int(timeout)}"
        self.k.execute(f"import numpy as np\na = np.ones({N})\nb = None", timeout=timeout)
        self.k.execute("%load_ext jupyter_gpu\nimport jupyter_gpu", timeout=60)
        on_cleanup(lambda: self.k.execute("%gpu release", timeout=30, check=False))
        self.k.execute(f"%%gpu --no-out {self.opt}\nimport numpy as np\nbase = np.ones({N})",
                       timeout=timeout)
        if with_torch:
            make = f"torch.ones({N}, dtype=torch.float64)"
            self.k.execute(f"import torch\nta = {make}\ntb = None", timeout=timeout)
            self.k.execute(f"%%gpu --no-out {self.opt}\nimport torch\ntbase = {make}", timeout=timeout)
        self.k.track_children()

    def _footer(self, rep):
        f = rep.footers()
        if not f:
            raise RuntimeError("%%gpu cell produced no footer")
        return f[-1]

    def send_in(self, i, kind="gpu"):
        a = KINDS[kind][0]
        self.k.execute(f"{a}[0] = {i}", timeout=self.t)
        rep = self.k.execute(f"%%gpu --no-out {self.opt}\nn = len({a})", timeout=self.t)
        return rep.seconds, self._footer(rep)

    def get_out(self, i, kind="gpu"):
        _, base, b = KINDS[kind]
        self.k.execute(f"{b} = None", timeout=self.t)
        rep = self.k.execute(f"%%gpu --out {b} {self.opt}\n{base}[0] = {i}\n{b} = {base}", timeout=self.t)
        return rep.seconds, self._footer(rep)

    def check(self, i, out_measured):
        """The last round really moved data: worker's a[0] is ours, local b is the worker's array."""
        self.k.execute(f"%%gpu --out _chk {self.opt}\n_chk = float(a[0])", timeout=self.t)
        res = {"remote_a0": self.k.value("_chk", timeout=self.t), "expected_a0": float(i)}
        ok = res["remote_a0"] == float(i)
        if out_measured:
            res["local_b"] = self.k.value("[type(b).__name__, int(getattr(b, 'size', -1)), "
                                          "float(b[0]) if hasattr(b, 'size') else None]", timeout=self.t)
            res["expected_b"] = ["ndarray", N, float(i)]
            ok = ok and res["local_b"] == res["expected_b"]
        res["ok"] = ok
        return res

    def unchanged(self, name="a"):
        rep = self.k.execute(f"%%gpu --no-out {self.opt}\nn = len({name})", timeout=self.t)
        last = self.k.value("jupyter_gpu.last_cell()", timeout=self.t)
        return rep.seconds, last


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="2 rounds: a smoke run")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per 1 GiB cell")
    ap.add_argument("--no-torch", action="store_true", help="skip the torch tensor rounds")
    ap.add_argument("--tcp-peer", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.tcp_peer:
        return peer_main(args.tcp_peer)
    if args.quick:
        args.rounds = min(args.rounds, 2)
    banner(f"transfer: 1 GiB in/out of %%gpu vs loopback TCP, {args.rounds} rounds after {args.warmup} warm-up")

    errors = {}
    with_torch = not args.no_torch
    if with_torch:
        try:
            import torch  # noqa: F401  (only whether the kernel's environment has it)
        except ImportError:
            with_torch, errors["torch"] = False, "torch is not installed: its rounds are skipped"
    tcp = TcpAnchor()
    gpu = None
    try:
        print("starting kernel, loading jupyter_gpu, creating `base` on the worker ...", flush=True)
        gpu = GpuTransfer(args.timeout, with_torch)
    except (CellError, CellTimeout, RuntimeError) as e:
        errors["gpu"] = f"setup failed: {e}"
        print(f"!! %%gpu transfer unavailable: {str(e)[:2000]}", file=sys.stderr, flush=True)

    timed = ["gpu_in", "gpu_out"] + (["torch_in", "torch_out"] if with_torch else [])
    secs = {"tcp_to_peer": [], "tcp_from_peer": [], **{k: [] for k in timed}}
    footers = {k: [] for k in timed}
    last_i = None
    for r in range(-args.warmup, args.rounds):
        measured = r >= 0
        res = {"tcp_to_peer": tcp.to_peer(), "tcp_from_peer": tcp.from_peer()}
        for name in timed:
            if gpu is None or name in errors:
                continue
            kind, way = name.split("_")
            try:
                res[name], foot = (gpu.send_in if way == "in" else gpu.get_out)(r, kind)
                if measured:
                    footers[name].append(foot)
            except (CellError, CellTimeout, RuntimeError) as e:
                errors[name] = f"round {r} failed: {e}"
                print(f"!! {name} dropped at round {r}: {str(e)[:2000]}", file=sys.stderr, flush=True)
        last_i = r
        line = "  ".join(f"{k} {gbps(v):6.2f} GB/s" for k, v in res.items())
        print(f"  {'warm-up' if not measured else f'round {r + 1}'}: {line}", flush=True)
        if measured:
            for k, v in res.items():
                secs[k].append(v)

    check, unchanged = None, None
    if gpu is not None and "gpu_in" not in errors:
        try:
            check = gpu.check(last_i, "gpu_out" not in errors)
            wall, last = gpu.unchanged()
            sent = (last.get("transfer") or {}).get("sent_bytes")
            unchanged = {"wall_ms": wall * 1000, "sent_bytes": sent, "footer": last,
                         "pass": sent is not None and sent <= 1024}
            if with_torch and "torch_out" not in errors:
                for name in ("ta", "tb"):  # tb came back from the worker in the last torch_out round
                    wall, last = gpu.unchanged(name)
                    sent = (last.get("transfer") or {}).get("sent_bytes")
                    unchanged[f"torch_{name}"] = {"wall_ms": wall * 1000, "sent_bytes": sent,
                                                  "pass": sent is not None and sent <= 1024}
        except (CellError, CellTimeout, RuntimeError) as e:
            errors["unchanged"] = str(e)
            print(f"!! unchanged re-send check failed: {str(e)[:2000]}", file=sys.stderr)

    st = {k: stats([gbps(s) for s in v], "GB/s") for k, v in secs.items() if v}
    st_ms = {k: stats([s * 1000 for s in v], "ms") for k, v in secs.items() if v}
    tcp_all = stats([gbps(s) for s in secs["tcp_to_peer"] + secs["tcp_from_peer"]], "GB/s")
    st["tcp_both"] = tcp_all
    print("\nthroughput (1 GiB = 1.074 GB per transfer; higher is better):")
    for k in ("tcp_to_peer", "tcp_from_peer", "tcp_both", *timed):
        print(fmt_stats(k, st[k]) if k in st else f"  {k:<28} NOT MEASURED: {errors.get(k, errors.get('gpu', '?'))[:200]}")
    ratios, targets = {}, {}
    for k in timed:
        if k in st:
            ratios[f"{k}_over_tcp"] = ratio(st[k]["median"], tcp_all["median"])
            targets[f"{k}_ge_half_tcp"] = {"value": ratios[f"{k}_over_tcp"], "limit": 0.5,
                                           "pass": ratios[f"{k}_over_tcp"] >= 0.5}
    if unchanged:
        targets["unchanged_resend_le_1KiB"] = {"value_bytes": unchanged["sent_bytes"], "limit_bytes": 1024,
                                               "pass": unchanged["pass"]}
    print("\nratios (medians, same run):")
    for k, v in ratios.items():
        print(f"  {k:<36} {v:8.3f}")
    for k in timed:
        if footers[k]:
            walls = [f.get("timings", {}).get("wall") for f in footers[k]]
            xfer = footers[k][-1].get("transfer")
            print(f"  {k} footer wall (s): {walls}; last transfer: {xfer}")
    print("\ntargets:")
    for k, label in (("gpu_in_ge_half_tcp", "in  >= 0.5 x TCP"), ("gpu_out_ge_half_tcp", "out >= 0.5 x TCP"),
                     *((("torch_in_ge_half_tcp", "torch in  >= 0.5 x TCP"), ("torch_out_ge_half_tcp", "torch out >= 0.5 x TCP"))
                       if with_torch else ())):
        t = targets.get(k)
        print(f"  {label:<28} " + (f"{verdict(t['pass'])}  (ratio {t['value']:.3f})" if t else "MISS (not measured)"))
    if unchanged:
        print(f"  {'unchanged re-send <= 1 KiB':<28} {verdict(unchanged['pass'])}  "
              f"(sent_bytes {unchanged['sent_bytes']}, cell {unchanged['wall_ms']:.1f} ms)")
        for name in ("torch_ta", "torch_tb"):
            u = unchanged.get(name)
            if u:
                label = f"{name[6:]} (torch) re-send"
                print(f"  {label:<28} {verdict(u['pass'])}  (sent_bytes {u['sent_bytes']}, cell {u['wall_ms']:.1f} ms)")
    else:
        print(f"  {'unchanged re-send <= 1 KiB':<28} MISS (not measured)")
    if check:
        print(f"  data check after last round: {'ok' if check['ok'] else 'WRONG'} {check}")

    write_result("transfer", {
        "config": {"rounds": args.rounds, "warmup": args.warmup, "bytes": NBYTES, "gb": NBYTES / 1e9,
                   "tcp": "one loopback connection, sendall/recv_into, both directions each round",
                   "gpu_in_cell": "%%gpu --no-out: n = a.size (after local a[0] = i)",
                   "gpu_out_cell": "%%gpu --out b: base[0] = i; b = base (after local b = None)",
                   "torch": "the same with float64 torch CPU tensors ta / tbase / tb" if with_torch else "skipped"},
        "variants": st, "variants_ms": st_ms, "ratios": ratios, "targets": targets,
        "footers": footers, "unchanged": unchanged, "check": check, "errors": errors})
    return 0


if __name__ == "__main__":
    run_main(main)
