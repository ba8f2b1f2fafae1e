"""Issue 25, faults, as a notebook sees them: a real kernel whose warm worker (reached by its direct
lane, the backend off the cell's path) hangs mid-cell.  The backend finds it by its heartbeat and
kills it; the cell ends within its bound with WorkerLost saying the worker stopped answering, and
the next cell runs on a new worker."""
from __future__ import annotations

import os
import signal

import pytest

from tests.conftest import LiveKernel, make_kernel_env
from tests.e2e.helpers import LOAD
from tests.integration.backend_process import start_backend, stop_backend

from .helpers import TOKEN, wait_gone
from .test_backend_restart import error_text

pytestmark = pytest.mark.timeout(300)

HEARTBEAT = 2.0
PID = "%%gpu\nimport os\nprint(os.getpid())"


def test_a_hung_worker_on_the_lane_fails_its_cell_saying_so(tmp_path):
    proc, url = start_backend(tmp_path, "--token", TOKEN, "--keep-warm", "600", "--worker-heartbeat", str(HEARTBEAT))
    (tmp_path / "runtime").mkdir()
    k = LiveKernel({**make_kernel_env(tmp_path / "runtime"), "JUPYTER_GPU_URL": url, "JUPYTER_GPU_TOKEN": TOKEN})
    try:
        k.run(LOAD)
        pid = int(k.run(PID, timeout=60).stdout())
        warm = k.run(PID)
        assert warm.footers()[-1].get("route") == "lane", warm.footers()
        cell = k.submit("%%gpu\nimport time\nprint('looping', flush=True)\ntime.sleep(60)")
        assert k.wait_until(lambda: "looping" in cell.stdout(), 30), "the cell never started"
        os.kill(pid, signal.SIGSTOP)
        assert k.wait_until(lambda: cell.done, 20), "the cell still waits on a hung worker"
        text = error_text(cell)
        assert cell.reply["content"]["ename"] == "WorkerLost", text
        assert f"stopped answering (no heartbeat for {HEARTBEAT:g} s" in text, text
        assert wait_gone(pid, 10), "the hung worker was not killed"
        after = k.run(PID, timeout=60)
        assert int(after.stdout()) != pid
    finally:
        k.shutdown()
        stop_backend(proc)
