"""The ledger: every cell's phases and every worker's transitions are recorded, and survive a
backend restart - where work that was in flight is recorded as lost, never as done."""
import json
import os
import signal
import urllib.request

import pytest

from jupyter_gpu._wire import messages
from jupyter_gpu._client.connection import BackendClient

from .backend_process import start_backend
from .test_backend_robustness import run_cell

pytestmark = pytest.mark.timeout(120)
TOKEN = "ledger-token"


def cells(url, session):
    req = urllib.request.Request(f"{url}/api/cells?session={session}", headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return {c["id"]: c for c in json.load(r)["cells"]}


def test_cells_are_recorded_with_their_phases_and_in_flight_work_is_lost_after_a_restart(tmp_path):
    recorded_then_lost_after_a_restart(tmp_path)  # the default ledger: a SQLite file in tmp_path


def recorded_then_lost_after_a_restart(tmp_path, *ledger_args):
    """A cell recorded with its phases; a cell in flight when the backend is SIGKILLed is lost after
    a restart, and what was done stays done.  ``ledger_args`` pick another ledger (--ledger DSN)."""
    proc, url = start_backend(tmp_path, "--token", TOKEN, *ledger_args)
    try:
        c = BackendClient(url, TOKEN, "s-ledger")
        done = run_cell(c, "# %%gpu\nx = 1", "c-ok")[-1]
        rec = cells(url, "s-ledger")["c-ok"]
        assert rec["status"] == "ok" and rec["worker"] == done["worker"] and rec["cold"] == 1
        assert rec["run_s"] > 0 and rec["cold_start_s"] > 0 and rec["done"] >= rec["submitted"]

        # a cell that is running when the backend dies
        c.send({"type": "execute", "cell": "c-inflight", "code": "# %%gpu\nimport time\nprint('started')\n"
                "time.sleep(60)", "gpu": "cpu", "inputs": {}, "keep": {}, "binds": []})
        while True:
            msg = c.recv(timeout=30)
            assert msg is not None, "the long cell never started"
            if msg.type == messages.STREAM:
                break
        assert cells(url, "s-ledger")["c-inflight"]["status"] == "running"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()

    proc, url = start_backend(tmp_path, "--token", TOKEN, *ledger_args)
    try:
        after = cells(url, "s-ledger")
        assert after["c-inflight"]["status"] == "lost", after["c-inflight"]
        assert after["c-ok"]["status"] == "ok"  # what was done stays done
        assert "now recorded as lost" in (tmp_path / "log").read_text()
    finally:
        proc.terminate()
        proc.wait(10)
