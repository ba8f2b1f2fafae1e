"""Issue 24, finding 9: the kernel never waits forever on a backend that does not answer.

The backend is hung for real (SIGSTOP on its process) while a `%%gpu` cell waits on it.  Before,
the cell waited with no deadline, and two stop presses did not end it.  Now a backend silent past
``JUPYTER_GPU_BACKEND_DEADLINE`` seconds (it does not even answer the kernel's pings) fails the
cell saying so, and a stop press ends the wait promptly.  A cell that is merely quiet (it sleeps,
printing nothing, with the backend well) is not failed: the deadline is the backend's, not the cell's.
"""
from __future__ import annotations

import json
import os
import signal
import time
from contextlib import contextmanager

import pytest

from tests.conftest import LiveKernel, _reap_backend, make_kernel_env, strip_ansi
from tests.e2e.helpers import LOAD

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def kernel(tmp_path):
    """``kernel(deadline)``: a live kernel with its own embedded backend, every cell through the
    backend (no direct lane, which would go around it), and one warm cell run."""
    d = tmp_path / "gpu-runtime"
    d.mkdir()
    kernels = []

    def start(deadline: float, lane: bool = False) -> tuple[LiveKernel, int]:
        env = {**make_kernel_env(d), "JUPYTER_GPU_LANE": "1" if lane else "0",
               "JUPYTER_GPU_BACKEND_DEADLINE": str(deadline)}
        k = LiveKernel(env)
        kernels.append(k)
        k.run(LOAD)
        k.run("%%gpu\nx = 41")
        return k, json.loads((d / "backend.json").read_text())["pid"]

    yield start
    for k in kernels:
        k.shutdown()
    _reap_backend(d)


@contextmanager
def hung(pid: int):
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def error_text(cell) -> str:
    c = cell.reply["content"]
    parts = [c.get("ename", ""), c.get("evalue", ""), *c.get("traceback", [])]
    for e in cell.errors():
        parts += [e.get("ename", ""), e.get("evalue", ""), *e.get("traceback", [])]
    return strip_ansi("\n".join(parts))


def test_a_hung_backend_fails_the_cell_after_the_deadline(kernel):
    k, pid = kernel(3)
    with hung(pid):
        cell = k.submit("%%gpu\nprint(x + 1)")
        t0 = cell.sent_at
        assert k.wait_until(lambda: cell.reply is not None, 30), "the cell still waits on a hung backend"
        took = cell.reply_at - t0
        assert cell.reply["content"]["status"] == "error"
        text = error_text(cell)
        assert "did not answer" in text and "3 s" in text, text
        assert 2.5 < took < 15, f"ended after {took:.1f} s, with a 3 s deadline"
    # the backend back: the next cell runs (the kernel reconnects)
    after = k.run("%%gpu\nprint('back')", timeout=60)
    assert "back" in after.stdout()


def test_the_stop_button_ends_the_wait_on_a_hung_backend(kernel):
    k, pid = kernel(600)  # the deadline is far: only the stop press can end this wait
    with hung(pid):
        cell = k.submit("%%gpu\nprint(x + 1)")
        assert not k.wait_until(lambda: cell.reply is not None, 1.0)
        t0 = k.interrupt()
        assert k.wait_until(lambda: cell.reply is not None, 20), "a stop press did not end the wait"
        took = cell.reply_at - t0
        assert cell.reply["content"]["status"] == "error"
        assert "did not answer" in error_text(cell), error_text(cell)
        assert took < 10, f"the stop press took {took:.1f} s to end the wait"


def test_the_stop_button_ends_a_lane_cell_whose_kill_cannot_reach_a_hung_backend(kernel):
    """A warm cell on the worker's direct lane does not need the backend, until the stop press:
    code that swallows the interrupt can only be killed through the backend."""
    k, pid = kernel(600, lane=True)
    k.run("%%gpu\nprint(x)")
    warm = k.run("%%gpu\nprint(x)")
    assert warm.footers()[-1].get("route") == "lane", warm.footers()
    with hung(pid):
        cell = k.submit("%%gpu\nimport time\nprint('looping', flush=True)\nwhile True:\n"
                        "    try:\n        time.sleep(0.1)\n    except KeyboardInterrupt:\n        pass\n")
        assert k.wait_until(lambda: "looping" in cell.stdout(), 30), "the lane cell never started"
        t0 = k.interrupt()
        assert k.wait_until(lambda: cell.reply is not None, 20), "a stop press did not end the wait"
        assert "did not answer" in error_text(cell), error_text(cell)
        assert cell.reply_at - t0 < 10


def test_a_long_quiet_cell_is_not_failed_by_the_deadline(kernel):
    k, _ = kernel(2)
    t0 = time.monotonic()
    cell = k.run("%%gpu\nimport time\ntime.sleep(7)\nprint('slept', x)", timeout=90)
    assert "slept 41" in cell.stdout() and time.monotonic() - t0 >= 7
