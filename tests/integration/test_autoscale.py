"""--target-utilisation with a real backend: a lease makes the backend start a spare beyond
min_warm (0 here), and the next session's cold cell takes it (no cold start)."""
import sqlite3
import time

import pytest

from jupyter_gpu._client.connection import BackendClient

from .backend_process import api_get, runtime_info, start_backend, stop_backend
from .test_backend_robustness import run_cell

pytestmark = pytest.mark.timeout(150)
TOKEN = "autoscale-token"


def runtime(url, wait):
    return runtime_info(url, TOKEN, wait)


def _flush_ledger(url):
    """/api/cells commits what the ledger has queued before it answers."""
    api_get(url, TOKEN, "/api/cells")


def test_target_utilisation_starts_a_spare_that_the_next_session_takes(tmp_path):
    proc, url = start_backend(tmp_path, "--token", TOKEN, "--target-utilisation", "0.7", "--keep-warm", "60")
    clients = []
    try:
        info = runtime(url, 60)
        assert info["ready"] and info["warm_pool"] == {} and info["min_warm"] == 0, info  # nothing leased: no spare
        assert info["autoscale"]["target_utilisation"] == 0.7

        a = BackendClient(url, TOKEN, "s-a")
        clients.append(a)
        done_a = run_cell(a, "# %%gpu\nx = 1", "a-1")[-1]
        assert done_a["status"] == "ok" and done_a["cold"] is True  # the first one cold-starts
        # 1 leased, 0 spares is utilisation 1.0 >= 0.7: the rule starts one spare (1/2 = 0.5)
        assert runtime(url, 60)["warm_pool"] == {"cpu": 1}

        b = BackendClient(url, TOKEN, "s-b")
        clients.append(b)
        done_b = run_cell(b, "# %%gpu\nx = 2", "b-1")[-1]
        assert done_b["status"] == "ok" and done_b["cold"] is False and done_b["timings"]["cold_start"] == 0
        assert done_b["worker"] != done_a["worker"]
        assert runtime(url, 60)["warm_pool"] == {"cpu": 1}  # 2 leased: one spare again keeps 2/3 < 0.7
        _flush_ledger(url)
    finally:
        for c in clients:
            c.close()
        stop_backend(proc)
    db = sqlite3.connect(tmp_path / "ledger.sqlite3")
    assert db.execute("SELECT COUNT(*) FROM workers WHERE pool = 'serverless'").fetchone()[0] == 3


def test_a_target_utilisation_out_of_range_is_refused(tmp_path):
    import os
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "jupyter_gpu_backend", "--target-utilisation", "1.5",
                        "--ledger", str(tmp_path / "l.sqlite3")], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "JUPYTER_GPU_ZYGOTE": "0"})
    assert r.returncode == 2 and "between 0 and 1" in r.stderr, r.stderr


def test_spares_beyond_the_target_stop_after_the_scale_down_delay(tmp_path):
    # --keep-warm 1: the scale-down delay; the cell asks for 60 s so its own lease stays while we look
    proc, url = start_backend(tmp_path, "--token", TOKEN, "--target-utilisation", "0.7", "--keep-warm", "1")
    try:
        assert runtime(url, 60)["warm_pool"] == {}
        a = BackendClient(url, TOKEN, "s-a")
        assert run_cell(a, "# %%gpu\nx = 1", "a-1", keep_warm=60)[-1]["status"] == "ok"
        assert runtime(url, 60)["warm_pool"] == {"cpu": 1}  # the utilisation rule's spare
        from jupyter_gpu._wire import messages

        a.send({"type": messages.RELEASE})  # nothing leased: the spare is beyond the target (0)
        assert a.recv(timeout=30).header.get("released") == 1
        info = runtime(url, 60)  # waits until the pool settles at its target
        assert info["ready"] and info["warm_pool"] == {"cpu": 0}, info
        a.close()
        _flush_ledger(url)
    finally:
        stop_backend(proc)
    db = sqlite3.connect(tmp_path / "ledger.sqlite3")
    states = [s for (s,) in db.execute("SELECT state FROM workers ORDER BY requested")]
    assert states == ["stopped", "stopped"], states  # the leased one (released) and the trimmed spare


def test_scale_up_queue_starts_a_spare_while_cells_wait_and_the_next_session_takes_it(tmp_path):
    """--scale-up-queue 2: two cells waiting for a worker at once (both cold-starting) make the
    backend start one spare beyond min_warm (0), so a third session's first cell starts warm."""
    from jupyter_gpu._wire import messages

    proc, url = start_backend(tmp_path, "--token", TOKEN, "--scale-up-queue", "2", "--keep-warm", "60")
    clients = []
    try:
        info = runtime(url, 60)
        assert info["warm_pool"] == {} and info["autoscale"]["scale_up_queue"] == 2, info
        a, b = BackendClient(url, TOKEN, "s-a"), BackendClient(url, TOKEN, "s-b")
        clients += [a, b]
        for c, cell in ((a, "a-1"), (b, "b-1")):  # both in flight before either has a worker
            c.send({"type": "execute", "cell": cell, "code": "# %%gpu\nx = 1", "gpu": "cpu", "inputs": {},
                    "keep": {}, "binds": []})
        dones = []
        for c in (a, b):
            while True:
                msg = c.recv(timeout=60)
                assert msg is not None, "no done within 60 s"
                if msg.type in (messages.DONE, messages.FAILURE):
                    dones.append(msg.header)
                    break
        assert [(d["status"], d["cold"]) for d in dones] == [("ok", True), ("ok", True)], dones
        # one spare per 2 waiting, started during the burst; it stays for the scale-down delay
        # (60 s) though nobody waits now (?wait=N would wait for that trim: the target is 0 again)
        deadline = time.monotonic() + 30
        while runtime(url, 0)["warm_pool"] != {"cpu": 1}:
            assert time.monotonic() < deadline, runtime(url, 0)
            time.sleep(0.05)  # the backend's pool, in another process: there is no event to wait on

        c = BackendClient(url, TOKEN, "s-c")
        clients.append(c)
        done_c = run_cell(c, "# %%gpu\nx = 3", "c-1")[-1]
        assert done_c["status"] == "ok" and done_c["cold"] is False and done_c["timings"]["cold_start"] == 0
        assert done_c["worker"] not in {d["worker"] for d in dones}
    finally:
        for cl in clients:
            cl.close()
        stop_backend(proc)
