"""Issue 25, faults: the backend restarted while cells run.  Each in-flight `%%gpu` cell of a real
kernel ends within its bound with an error that says what happened, the restarted backend's ledger
has every cell (those in flight when it went: `lost`), the next cell runs on the new backend, and
`%gpu status` shows that backend's worker (not the dead one's).

A `serve` backend on a fixed port and ledger, stopped (SIGKILL and SIGTERM in turn) and started
again 20 times, each time while a cell of the kernel is running on it.
"""
from __future__ import annotations

import re
import signal
import socket
import sqlite3
import time

import pytest

from tests.conftest import LiveKernel, make_kernel_env, strip_ansi
from tests.e2e.helpers import LOAD
from tests.integration.backend_process import api_get, start_backend, stop_backend

from .helpers import TOKEN, wait_gone

pytestmark = pytest.mark.timeout(400)

RESTARTS = 20
BOUND = 20.0  # seconds an in-flight cell may take to end once its backend went
RUNNING = "%%gpu\nimport os, time\nprint('running', os.getpid(), flush=True)\ntime.sleep(120)\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def running_in_ledger(url: str, timeout: float = 10) -> None:
    """Until the ledger has committed a cell as running (the backend writes in batches: there is no
    event to wait on from outside)."""
    deadline = time.monotonic() + timeout
    while not any(c["status"] == "running" for c in api_get(url, TOKEN, "/api/cells")["cells"]):
        assert time.monotonic() < deadline, "the running cell never reached the ledger"
        time.sleep(0.05)


def error_text(cell) -> str:
    c = cell.reply["content"]
    parts = [c.get("ename", ""), c.get("evalue", "")]
    for e in cell.errors():
        parts += [e.get("ename", ""), e.get("evalue", ""), *e.get("traceback", [])]
    return strip_ansi("\n".join(parts))


def test_cells_in_flight_when_the_backend_restarts_end_with_a_clear_error(tmp_path):
    d = tmp_path / "backend"
    d.mkdir()
    args = ("--token", TOKEN, "--port", str(free_port()), "--keep-warm", "600")
    proc, url = start_backend(d, *args)
    env = {**make_kernel_env(tmp_path / "runtime"), "JUPYTER_GPU_URL": url, "JUPYTER_GPU_TOKEN": TOKEN}
    (tmp_path / "runtime").mkdir()
    k = LiveKernel(env)
    try:
        k.run(LOAD)
        ended = []
        for n in range(RESTARTS):
            warm = n % 4 >= 2  # a warm cell: on the worker's direct lane, which the backend does not see
            if warm:
                k.run("%%gpu\npass", timeout=60)
            cell = k.submit(RUNNING)
            assert k.wait_until(lambda: "running" in cell.stdout() or cell.done, 60), f"round {n}: never ran"
            assert not cell.done, f"round {n}: {error_text(cell)}"
            pid = int(cell.stdout().split()[1])
            if n % 2 == 0 or warm:
                # a backend killed loses what its ledger had not committed (its last batch, 0.2 s), and
                # one stopped knows of a lane cell only once its worker announced it (after 20 ms)
                running_in_ledger(url)
            proc.send_signal(signal.SIGKILL if n % 2 == 0 else signal.SIGTERM)
            proc.wait(60)
            t_gone = time.monotonic()
            proc, _ = start_backend(d, *args)
            assert k.wait_until(lambda: cell.done, BOUND), f"round {n}: the cell still runs {BOUND} s after its backend went"
            took = cell.reply_at - t_gone
            assert cell.reply["content"]["status"] == "error", cell.reply["content"]
            text = error_text(cell)
            # not an internal error; WorkerLost: a lane cell, whose worker went with its backend
            assert cell.reply["content"]["ename"] in ("ConnectionLost", "WorkerLost"), f"round {n}: {text}"
            assert re.search(r"backend.*(restarted|closed|lost)|cannot reach the backend", text, re.S), f"round {n}: {text!r}"
            ended.append(round(took, 1))
            assert wait_gone(pid, 10), f"round {n}: worker {pid} outlived its backend"
            assert cell.stdout().count("running") == 1, f"round {n}: it ran again: {cell.stdout()!r}"
        # the next cell runs on the new backend, and `%gpu status` is that backend's
        after = k.run("%%gpu\nimport os\nprint('after', os.getpid())", timeout=60)
        assert "after" in after.stdout()
        footer = after.footers()[-1]
        status = k.run("%gpu status").stdout()
        assert footer["worker"] in status and status.count("keep-warm") == 1, status
    finally:
        k.shutdown()
        stop_backend(proc)
    with sqlite3.connect(d / "ledger.sqlite3") as db:
        rows = db.execute("SELECT id, status FROM cells ORDER BY submitted").fetchall()
    counts = {}
    for _, status in rows:
        counts[status] = counts.get(status, 0) + 1
    warm = sum(1 for n in range(RESTARTS) if n % 4 >= 2)
    assert counts.get("lost") == RESTARTS and counts.get("ok") == 1 + warm and "running" not in counts, rows
