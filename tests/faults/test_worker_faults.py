"""Issue 25, faults: a worker that dies or hangs at a random point of its cell fails that cell alone,
with the cause, within a bound; the session's next cell runs on a new worker, and another session's
warm worker never notices.

The kinds: SIGKILL from outside, ``os._exit`` and a segfault (ctypes) from the cell itself, an
out-of-memory cell (RLIMIT_AS lowered, then allocating: Python's MemoryError is an ordinary error of
the cell; a worker whose own machinery runs out dies, and is reported, as out of memory), and a hung
worker (SIGSTOP: its process is there but answers nothing), found by the worker heartbeat.  The
random points are seeded, so a failure replays.  Real `serve` backend, real forked workers.
"""
from __future__ import annotations

import os
import random
import re
import signal
import time

import pytest

from tests.integration.backend_process import start_backend, stop_backend

from .helpers import TOKEN, Session, wait_gone

pytestmark = pytest.mark.timeout(400)

SEED = 25
CELLS = 50
HEARTBEAT = 2.0  # --worker-heartbeat: a worker silent this long is hung
BOUND = 20.0  # no faulted cell may take longer than this to end (a hang: HEARTBEAT, then its kill)
KINDS = ("sigkill", "exit", "segfault", "oom", "hang")
PID = "import os\nprint(os.getpid())"


def lines(k: int) -> str:
    """Code that prints ``k`` lines (the random point: the fault comes after them)."""
    return f"import time\nfor i in range({k}):\n    print(i, flush=True)\n    time.sleep(0.002)\n"


FOREVER = "import time\ni = 0\nwhile True:\n    i += 1\n    print(i, flush=True)\n    time.sleep(0.002)\n"
OOM = ("import resource\n"
       "def vm():\n"
       "    for l in open('/proc/self/status'):\n"
       "        if l.startswith('VmSize'):\n"
       "            return int(l.split()[1]) * 1024\n"
       "resource.setrlimit(resource.RLIMIT_AS, (vm() + (32 << 20), resource.RLIM_INFINITY))\n"
       "chunks = []\n"
       "while True:\n"
       "    chunks.append(bytearray(1 << 20))\n")
IN_CELL = {"exit": "import os\nos._exit(3)\n", "segfault": "import ctypes\nctypes.string_at(0)\n", "oom": OOM}
# (out of memory, a worker dies as its C code meets a failed allocation: a segfault or an abort, or its
# own Python code meets MemoryError: exit status 75; or, stuck, it stops answering: the heartbeat's)
CAUSE = {"sigkill": "SIGKILL", "exit": "exited with code 3", "segfault": "SIGSEGV",
         "hang": re.escape(f"stopped answering (no heartbeat for {HEARTBEAT:g} s"),
         "oom": "ran out of memory|killed by SIG(SEGV|ABRT|BUS)|stopped answering"}


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    proc, url = start_backend(tmp_path_factory.mktemp("faults"), "--token", TOKEN, "--keep-warm", "600",
                              "--no-lane", "--worker-heartbeat", str(HEARTBEAT))
    yield url
    stop_backend(proc)


def test_a_worker_killed_at_a_random_point_fails_only_its_cell(backend):
    rng = random.Random(SEED)
    kinds = [KINDS[i % len(KINDS)] for i in range(CELLS)]
    rng.shuffle(kinds)
    bystander = Session(backend, "s-bystander")  # another session's warm worker: untouched throughout
    b0 = bystander.run("import os\nkept = os.getpid()\nprint(kept)")
    s = Session(backend, "s-faults")
    pid = int(s.run(PID).stdout())
    seen = []
    for n, kind in enumerate(kinds):
        k = rng.randrange(0, 40)
        what = f"cell {n} ({kind} after {k} lines)"
        if kind in IN_CELL:
            run = s.start(lines(k) + IN_CELL[kind])
        else:
            run = s.start(FOREVER)
            assert s.until(run, lambda r: r.stdout().count("\n") >= k + 1, BOUND), f"{what}: ended early {run.events}"
            os.kill(pid, signal.SIGKILL if kind == "sigkill" else signal.SIGSTOP)
        s.finish(run, BOUND)
        final = run.final
        assert final["type"] == "done", f"{what}: {final}"
        if kind == "oom" and final["status"] == "error":  # Python's MemoryError: an error of the cell
            named = {e.get("ename") or e["pickled"]["t"] for e in run.events if e["type"] == "error"}
            assert named == {"MemoryError"}, f"{what}: {run.events[-3:]}"
        else:
            assert final["status"] == "lost", f"{what}: {final}"
            err = run.errors()
            if kind == "oom":  # the cell's MemoryError may have been shown before the worker died of it
                err = [e for e in err if e["ename"] != "MemoryError"]
            assert len(err) == 1 and err[0]["ename"] == "WorkerLost", f"{what}: {run.events[-3:]}"
            cause = CAUSE[kind]
            assert re.search(cause, err[0]["evalue"]), f"{what}: {err[0]['evalue']!r} does not say {cause!r}"
            assert wait_gone(pid, 10), f"{what}: worker {pid} is still there"
        nxt = s.run(PID, bound=BOUND)
        if final["status"] == "error" and nxt.final["status"] == "lost":
            # the worker outlived its cell's MemoryError at the lowered limit, with the cell's memory
            # held (as a local kernel would): the next cell may die of that, and must say so
            err = nxt.errors()
            assert len(err) == 1 and re.search(CAUSE["oom"], err[0]["evalue"]), f"the cell after {what}: {nxt.events}"
            assert wait_gone(pid, 10), f"after {what}: worker {pid} is still there"
            final = nxt.final  # the worker is gone, as after a worker's own death
            nxt = s.run(PID, bound=BOUND)
        assert nxt.final["status"] == "ok", f"the cell after {what}: {nxt.events}"
        new_pid = int(nxt.stdout())
        assert (new_pid == pid) == (final["status"] == "error"), f"after {what}: pid {pid} -> {new_pid}"
        if final["status"] == "error":
            # the worker lives on, as a local kernel would, at its lowered limit with its memory held:
            # the next cell works, but what follows would fault of memory, not of its own kind
            assert s.request({"type": "release"}, "status_reply")["released"] == 1
            new_pid = int(s.run(PID, bound=BOUND).stdout())
        pid = new_pid
        seen.append((kind, final["status"], round(run.took, 1)))
    assert {k for k, _, _ in seen} == set(KINDS)
    b1 = bystander.run("import os\nprint(kept, os.getpid())")
    assert b1.final["status"] == "ok" and b1.final["cold"] is False, b1.events
    assert b1.stdout().split() == [b0.stdout().strip()] * 2
    s.close()
    bystander.close()


def test_a_long_quiet_cell_is_not_taken_for_a_hung_worker(backend):
    """The heartbeat comes from the worker's reader thread, not from the cell: a cell that sleeps
    (prints nothing) four times the heartbeat's bound ends well, on the same worker."""
    s = Session(backend, "s-quiet")
    pid = s.run(PID).stdout()
    t0 = time.monotonic()
    run = s.run(f"import time, os\ntime.sleep({4 * HEARTBEAT})\nprint(os.getpid())", bound=60)
    assert run.final["status"] == "ok", run.events
    assert run.stdout() == pid and time.monotonic() - t0 >= 4 * HEARTBEAT
    s.close()


def test_a_worker_whose_own_machinery_runs_out_of_memory_dies_saying_so(backend):
    """Python's MemoryError in the cell's code is the cell's error (above); one in the worker's own
    work after it (here: sending the cell's final event, made to fail as an exhausted heap makes it)
    leaves the worker unable to go on: it exits at once, and the cell is lost "out of memory",
    not left waiting, nor said as an unexplained exit."""
    s = Session(backend, "s-machinery")
    pid = int(s.run(PID).stdout())
    run = s.run("def end(*args, **kwargs):\n    raise MemoryError\nget_ipython().emitter.end = end\n", bound=BOUND)
    assert run.final["status"] == "lost", run.events
    err = run.errors()
    assert len(err) == 1 and "ran out of memory" in err[0]["evalue"], err
    assert wait_gone(pid, 10)
    assert s.run(PID).final["status"] == "ok"
    s.close()
