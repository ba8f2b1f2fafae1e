"""Issue 25, the soak: 20 real ipykernels x 100 `%%gpu` cells with random interrupts and releases
against ONE real `serve` backend (local runtime, loopback), then nothing is left behind: no worker
process beyond the zygote, no file descriptor of the backend beyond its warm-up baseline, no
/dev/shm segment of ours, no temporary directory, no ledger row still `running` - counted while the
backend still runs (every session released) and again after it stopped.

The kernels' cells: prints after a random short sleep, a cell interrupted (SIGINT to the kernel, the
stop button) at a random point of its sleep after its first output, numpy inputs and results large
enough to go by /dev/shm segments, `%gpu release`.  Alongside them ``RAW`` sessions speak the
magic's own client (``BackendClient``) raw, for what a kernel cannot be made to do on cue: an
interrupt at a random point before, during or just after its cell (a cold start's too, after a
release), the stop button's second press (its worker killed: the backend unlinks the segments the
worker could not), and values lent by this process.  All 24 at once fit the 4-minute bound on this 2-core
machine (about a minute).

Seeded: each session's cells, sleeps, interrupts and releases come from ``random.Random(SEED, i)``,
so a failing session replays (the interleaving of sessions does not).  ``JUPYTER_GPU_SOAK=KxC``
runs a smaller soak (e.g. ``4x10``: 4 kernels and at most 4 raw sessions) to reproduce one by hand.

How leaks are counted (nothing here mocks a part):
- the backend and its workers get their own ``TMPDIR`` (the test's): every temporary directory they
  make is there, and must be gone (``jupyter-gpu-*``) after the stop;
- processes: the backend's descendants, sampled while the soak runs (workers are forked from the
  zygote), so the segments they named after their pid (``shm.py``) can be attributed to them;
- fds: ``/proc/<backend>/fd`` after every session left, against the count after a warm-up session
  (``FD_SLACK``);
- the ledger: the SQLite file in the test's directory, read after the stop.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

from jupyter_gpu._client.connection import BackendClient
from jupyter_gpu._wire import messages, serialization, shm

from tests.conftest import LiveKernel, make_kernel_env
from tests.integration.backend_process import api_get, runtime_info, start_backend, stop_backend

pytestmark = pytest.mark.timeout(600)

SEED = 25
KERNELS, CELLS = (int(n) for n in os.environ.get("JUPYTER_GPU_SOAK", "20x100").split("x"))
RAW = min(4, KERNELS)  # sessions spoken raw besides the kernels (see the docstring)
TOKEN = "soak-token"
N = 1 << 18  # float64s in a numpy input: 2 MiB, over serialization.SHM_MIN, so it goes by a segment
BOUND = 60.0  # no cell may take longer to end
# fds the backend may hold beyond its warm-up count once every session left: none is expected, but
# the asyncio loop's and uvicorn's own (a self-pipe, an accepted socket a client closed that the
# loop has not reaped yet) come and go
FD_SLACK = 3
SEG = re.compile(rf"^{re.escape(shm.PREFIX)}(\d+)-")


# -- what is there ---------------------------------------------------------------------------------
def children() -> dict[int, list[int]]:
    """ppid -> pids, of every process now."""
    out: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            out.setdefault(ppid, []).append(int(name))
    return out


def descendants(pid: int, tree: dict | None = None) -> set[int]:
    tree, out, todo = tree or children(), set(), [pid]
    while todo:
        for c in tree.get(todo.pop(), ()):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def workers_of(backend: int) -> set[int]:
    """The backend's descendants other than its zygote(s): workers, and whatever they started.  (A
    worker forked from a zygote has the zygote's command line: the zygote is the backend's child.)"""
    zygotes = {p for p in children().get(backend, ()) if "jupyter_gpu_worker.zygote" in cmdline(p)}
    return descendants(backend) - zygotes


def open_fds(pid: int) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


def segments() -> set[str]:
    return {n for n in os.listdir(shm.SHM_DIR) if n.startswith(shm.PREFIX)}


def ours(names: set[str], pids: set[int]) -> set[str]:
    """The segments named after one of ``pids`` (shm.py names them PREFIX + creator's pid)."""
    return {n for n in names if (m := SEG.match(n)) and int(m.group(1)) in pids}


def in_flight(url: str) -> list:
    cells = api_get(url, TOKEN, "/api/cells?limit=10000")["cells"]
    return [(c["id"], c["status"]) for c in cells if c["status"] in ("running", "queued")]


def wait_for(cond, timeout: float, what) -> None:
    """Poll ``cond`` (state of other processes: there is no event to wait on) until it holds."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what()
        time.sleep(0.05)


class Sampler(threading.Thread):
    """Every pid that was ever a descendant of ``roots`` while the soak ran, and every segment."""

    def __init__(self, roots: set[int], backend: int):
        super().__init__(daemon=True)
        self.roots, self.seen, self.stop = set(roots), set(roots), threading.Event()
        self.backend, self.workers, self.segments = backend, set(), set()

    def run(self):
        while not self.stop.wait(0.2):
            tree = children()
            for r in self.roots:
                self.seen |= descendants(r, tree)
            self.workers |= descendants(self.backend, tree)
            self.segments |= segments()


# -- a raw session: what the magic sends, by the magic's client -------------------------------------
class Raw:
    def __init__(self, url: str, sid: str):
        self.c = BackendClient(url, TOKEN, sid)
        self.pool, self.reader = shm.SegmentPool(), shm.SegmentReader()
        self.n, self.worker = 0, None

    def send(self, code: str, inputs=None, binds=()) -> str:
        self.n += 1
        cell = f"c{self.n}"
        packer = serialization.Packer(shm_pool=self.pool)
        specs = {k: packer.pack(serialization.pickle_value(k, v)) for k, v in (inputs or {}).items()}
        self.c.send({"type": messages.EXECUTE, "cell": cell, "code": code, "gpu": "cpu", "inputs": specs,
                     "keep": {}, "binds": list(binds), "shm": True, "returned": self.reader.drain_returned()},
                    packer.buffers)
        return cell

    def until(self, cell: str, cond=lambda h: False) -> tuple[dict, list]:
        """Read ``cell``'s events until its end (returned: its final header, its events) or ``cond``."""
        events, deadline = [], time.monotonic() + BOUND
        while True:
            msg = self.c.recv(timeout=max(0.0, deadline - time.monotonic()))
            assert msg is not None, f"{self.c.session_id}/{cell}: no end within {BOUND} s; got {events[-5:]}"
            h = msg.header
            if h.get("cell") not in (cell, None) and h["type"] != messages.FAILURE:
                continue  # (a late event of an earlier cell)
            events.append(h)
            if h["type"] in (messages.DONE, messages.FAILURE):
                if h["type"] == messages.DONE:
                    self.finished(h, msg.buffers)
                return h, events
            if cond(h):
                return h, events

    def finished(self, done: dict, buffers) -> None:
        if self.worker is not None and done.get("worker") != self.worker:
            self.pool.reclaim(done.get("worker"))  # the previous worker is gone, its mappings too
        self.worker = done.get("worker")
        self.pool.lent(self.worker)
        self.pool.returned(done.get("returned", ()))
        spec = (done.get("values") or {}).get("y")  # (besides the modules a cell imported)
        if spec is not None:
            y = serialization.unpack("y", spec, buffers, self.reader)  # (a segment of the worker's)
            assert float(y[0]) == float(y[-1]), y
            del y  # the kernel lets go of it: its segment's name goes back with the next execute

    def release(self) -> None:
        self.c.send({"type": messages.RELEASE})
        deadline = time.monotonic() + BOUND
        while True:
            msg = self.c.recv(timeout=max(0.0, deadline - time.monotonic()))
            assert msg is not None, f"{self.c.session_id}: no answer to release within {BOUND} s"
            if msg.type == messages.STATUS_REPLY and "released" in msg.header:
                self.pool.reclaim()  # its worker is gone, and its mappings with it
                self.worker = None
                return

    def close(self) -> None:
        self.c.close()
        self.pool.close()


def interrupted(h: dict, events: list) -> bool:
    return h.get("status") == "interrupted" or any(e.get("ename") == "KeyboardInterrupt" for e in events)


def soak_raw(url: str, i: int, rng: random.Random, sent: dict) -> None:
    s = Raw(url, f"soak-{i}")
    try:
        for k in range(CELLS):
            kind = rng.choices(["print", "sleep", "interrupt", "race", "shm", "release", "kill"],
                               [4, 3, 1, 1, 2, 1, 0.5])[0]
            if kind == "print":
                h, ev = s.until(s.send(f"print({k})"))
                assert h.get("status") == "ok" and [e["text"] for e in ev if e["type"] == "stream"] == [f"{k}\n"], ev
            elif kind == "sleep":
                h, ev = s.until(s.send(f"import time\ntime.sleep({rng.uniform(0, 0.03):.4f})\nprint('s{k}')"))
                assert h.get("status") == "ok", ev
            elif kind == "interrupt":  # interrupted while it sleeps, after its first output
                cell = s.send(f"import time\nprint('go', flush=True)\ntime.sleep({BOUND})")
                h, ev = s.until(cell, lambda h: h["type"] == messages.STREAM)
                assert h["type"] == messages.STREAM, ev
                s.c.send({"type": messages.INTERRUPT, "cell": cell})
                h, ev = s.until(cell)
                assert interrupted(h, ev), ev
            elif kind == "race":  # an interrupt at a random point: before, during or after the cell ran
                cell = s.send(f"import time\ntime.sleep({rng.uniform(0, 0.02):.4f})")
                time.sleep(rng.uniform(0, 0.03))  # the random point itself
                s.c.send({"type": messages.INTERRUPT, "cell": cell})
                h, ev = s.until(cell)
                assert h.get("status") == "ok" or interrupted(h, ev), ev
            elif kind == "shm":
                x = np.full(N, float(k))
                h, ev = s.until(s.send("y = x + 1\nprint(float(y[0]))", {"x": x}, binds=["y"]))
                assert h.get("status") == "ok" and any(e.get("text") == f"{k + 1.0}\n" for e in ev), ev
            elif kind == "kill":  # the stop button's second press: the backend kills its worker
                h, ev = s.until(s.send("y = x + 1", {"x": np.ones(N)}, binds=["y"]))  # it holds a segment
                assert h.get("status") == "ok", ev
                cell = s.send(f"import os, time\nprint(os.getpid(), flush=True)\ntime.sleep({BOUND})")
                h, ev = s.until(cell, lambda h: h["type"] == messages.STREAM)
                assert h["type"] == messages.STREAM, ev
                pid = int(h["text"])
                s.c.send({"type": messages.KILL, "cell": cell, "gpu": "cpu"})
                h, ev = s.until(cell)
                assert h.get("status") == "killed", ev
                # a killed worker cannot unlink its segments: the backend does, not the next sweep
                wait_for(lambda: not ours(segments(), {pid}), 10,
                         lambda: f"segments of killed worker {pid}: {ours(segments(), {pid})}")
            else:
                s.release()
        h, ev = s.until(s.send("print('last')"))  # after all that, the session still serves
        assert h.get("status") == "ok", ev
        s.release()
        sent[i] = s.n
    finally:
        s.close()


# -- a real kernel ----------------------------------------------------------------------------------
def soak_kernel(k: LiveKernel, i: int, rng: random.Random, sent: dict) -> None:
    k.run("import numpy as np")
    for n in range(CELLS):
        kind = rng.choices(["print", "interrupt", "shm", "release"], [6, 1, 2, 1])[0]
        sent[i] = sent.get(i, 0) + (kind != "release")  # the %%gpu cells: each a ledger row
        if kind == "print":
            c = k.run(f"%%gpu\nimport time\ntime.sleep({rng.uniform(0, 0.02):.4f})\nprint({n})", timeout=BOUND)
            assert c.stdout().startswith(f"{n}\n"), c.stdout()
        elif kind == "interrupt":
            c = k.submit(f"%%gpu\nimport time\nprint('go', flush=True)\ntime.sleep({BOUND})")
            assert k.wait_until(lambda: "go" in c.stdout() or c.done, BOUND), f"kernel {i}: no 'go'"
            time.sleep(rng.uniform(0, 0.05))  # the random point (of a sleep of BOUND: the cell still runs)
            k.interrupt()
            assert k.wait_until(lambda: c.done, BOUND), f"kernel {i}: the interrupted cell did not end"
            assert c.reply["content"].get("ename") == "KeyboardInterrupt", c.reply["content"]
        elif kind == "shm":
            k.run(f"x = np.full({N}, {float(n)})")
            c = k.run("%%gpu\ny = x + 1\nprint(float(y[0]))", timeout=BOUND)
            assert f"{n + 1.0}\n" in c.stdout(), c.stdout()
            k.run("assert float(y[-1]) == float(y[0])\ndel y")
        else:
            assert "released" in k.run("%gpu release").stdout()
    k.run("%gpu release")


# -- the soak --------------------------------------------------------------------------------------
def test_soak_leaves_nothing_behind(tmp_path):
    # short: the workers' lane sockets live under it (AF_UNIX paths are at most 107 bytes)
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    kernels_tmp = tmp_path / "kernels-tmp"
    kernels_tmp.mkdir()
    shm_before = segments()
    proc, url = start_backend(tmp_path, "--token", TOKEN, "--keep-warm", "600",
                              env={"TMPDIR": str(tmp), "JUPYTER_GPU_STRICT_WIRE": "1"})
    sampler = held = None
    kernel_pids: set[int] = set()
    kernels: list[LiveKernel] = []
    try:
        # warm-up: a worker has run a cell, the ledger opened, the zygote started; then the baseline
        w = Raw(url, "warm-up")
        h, ev = w.until(w.send("print('warm')"))
        assert h.get("status") == "ok", ev
        w.release()
        w.close()
        wait_for(lambda: not workers_of(proc.pid), 30, lambda: f"workers left after warm-up: {workers_of(proc.pid)}")
        # the zygote starts once no worker has been spawned for a while: its pipes are in the baseline
        assert runtime_info(url, TOKEN, wait=120)["ready"]
        baseline = open_fds(proc.pid)

        env = {**make_kernel_env(tmp_path / "kernels"), "JUPYTER_GPU_URL": url, "JUPYTER_GPU_TOKEN": TOKEN,
               "TMPDIR": str(kernels_tmp)}
        # (each its own IPython directory: 20 kernels writing one history database lock each other out,
        # and IPython says so in a cell's output)
        kernels = [LiveKernel.beside(tmp_path, {**env, "IPYTHONDIR": str(tmp_path / f"ipython-{i}")})
                   for i in range(KERNELS)]
        kernel_pids = {k.km.provisioner.pid for k in kernels}
        sampler = Sampler({proc.pid, os.getpid(), *kernel_pids}, proc.pid)
        sampler.start()

        t0 = time.monotonic()
        errors: list[str] = []
        sent: dict[int, int] = {}  # session -> cells it ran on the backend

        def guarded(fn, *args):
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001 - every session's failure is reported
                where = traceback.extract_tb(e.__traceback__)[-1]
                errors.append(f"session {args[1]}: {type(e).__name__}: {e} (line {where.lineno})")

        threads = [threading.Thread(target=guarded, args=(soak_kernel, k, i, random.Random(f"{SEED}-{i}"), sent))
                   for i, k in enumerate(kernels)]
        threads += [threading.Thread(target=guarded, args=(soak_raw, url, i, random.Random(f"{SEED}-{i}"), sent))
                    for i in range(KERNELS, KERNELS + RAW)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(400)
        assert not any(t.is_alive() for t in threads), "a session hung"
        assert not errors, "\n".join(errors[:10])
        took = time.monotonic() - t0

        while kernels:
            kernels.pop().shutdown()
        # every session released: no worker left, no fd beyond the baseline's, no cell `running`
        wait_for(lambda: not workers_of(proc.pid), 30,
                 lambda: f"workers left while the backend runs: {[(p, cmdline(p)) for p in workers_of(proc.pid)]}")
        wait_for(lambda: len(open_fds(proc.pid)) <= len(baseline) + FD_SLACK, 30,
                 lambda: f"fds beyond the baseline ({len(baseline)}): "
                         f"{sorted(set(open_fds(proc.pid)) - set(baseline))}")
        wait_for(lambda: not in_flight(url), 30, lambda: f"ledger rows in flight while it runs: {in_flight(url)[:10]}")
        # (a stopped worker's log with something in it stays for a person to read; an empty one goes)
        logs = [p.name for p in tmp.glob("jupyter-gpu-workers-*/w-*.log") if p.stat().st_size == 0]
        assert not logs, f"empty logs of stopped workers left: {len(logs)}"
        print(f"soak: {KERNELS} kernels and {RAW} raw sessions x {CELLS} cells in {took:.1f} s; "
              f"backend fds {len(baseline)} -> "
              f"{len(open_fds(proc.pid))}")

        # a session that still holds its worker (and a result of its in a segment) when the backend
        # stops: the stop kills that worker, which cannot remove its segments itself
        held = Raw(url, "held")
        h, ev = held.until(held.send("y = x + 1", {"x": np.zeros(N)}, binds=["y"]))
        assert h.get("status") == "ok", ev
        held_workers = workers_of(proc.pid)
        assert held_workers, "the held session has no worker"
        assert ours(segments(), held_workers), "the held worker's result came by no segment"
    finally:
        if sampler is not None:
            sampler.stop.set()
            sampler.join()
        for k in kernels:
            k.shutdown()
        stop_backend(proc)
        if held is not None:
            held.close()

    seen = (sampler.seen | held_workers) - {os.getpid()}
    # the soak did lend segments both ways (else it would show no shared-memory leak it could have)
    assert ours(sampler.segments, sampler.workers), "no worker sent a value back by shared memory"
    assert ours(sampler.segments, kernel_pids), "no kernel lent a value by shared memory"
    assert ours(sampler.segments, {os.getpid()}), "no raw session lent a value by shared memory"
    alive = {p for p in seen if shm.pid_alive(p)}
    assert not alive, f"processes of the soak still there: {[(p, cmdline(p)) for p in alive]}"
    left = ours(segments() - shm_before, seen | {os.getpid()})
    assert not left, f"shared-memory segments left: {sorted(left)}"
    temp = sorted(p.name for p in [*tmp.iterdir(), *kernels_tmp.iterdir()] if p.name.startswith("jupyter-gpu-"))
    assert not temp, f"temporary directories left: {temp}"
    shutil.rmtree(tmp)  # (empty: left behind only when the soak failed, for a look at it)
    with sqlite3.connect(tmp_path / "ledger.sqlite3") as db:
        running = db.execute("SELECT id, status FROM cells WHERE status IN ('running', 'queued')").fetchall()
        workers = db.execute("SELECT id, state FROM workers WHERE state IN ('starting', 'idle', 'leased')").fetchall()
        rows = dict(db.execute("SELECT status, count(*) FROM cells GROUP BY status").fetchall())
    print(f"ledger: {rows}; cells sent {sum(sent.values())}")
    assert sum(rows.values()) >= sum(sent.values()), "cells missing from the ledger"
    assert not running, f"ledger rows still in flight: {running[:10]}"
    assert not workers, f"ledger workers still live: {workers[:10]}"
