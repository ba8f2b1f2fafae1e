"""Hybrid pools: always-on dedicated workers take work first, serverless workers the overflow;
a dedicated worker is recycled (a fresh process) when its session lets it go; the ledger
attributes every worker and cell to one pool or the other."""
import json
import os
import sqlite3
import subprocess
import sys
import urllib.request

import pytest

from jupyter_gpu._wire import messages
from jupyter_gpu._client.connection import BackendClient

from .backend_process import start_backend, stop_backend
from .test_backend_robustness import run_cell

pytestmark = pytest.mark.timeout(150)
TOKEN = "hybrid-token"
PID_CELL = "# %%gpu\nimport os\nprint(os.getpid())"


def get(url, path):
    req = urllib.request.Request(f"{url}{path}", headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(req, timeout=70) as r:
        return json.load(r)


def pid_of(events) -> int:
    text = "".join(e.get("text", "") for e in events if e["type"] == messages.STREAM)
    return int(text.split()[0])


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_dedicated_first_serverless_overflow_recycled_and_attributed(tmp_path):
    proc, url = start_backend(tmp_path, "--token", TOKEN, "--dedicated", "cpu=1", "--keep-warm", "60")
    clients = []
    try:
        info = get(url, "/api/runtime?wait=60")  # waits on the zygote and the dedicated worker
        assert info["ready"] and info["dedicated"] == {"cpu": {"size": 1, "live": 1, "free": 1}}, info

        a = BackendClient(url, TOKEN, "s-a")
        clients.append(a)
        ev = run_cell(a, PID_CELL, "a-1")
        done_a = ev[-1]
        assert done_a["status"] == "ok" and done_a["pool"] == "dedicated", done_a
        assert done_a["cold"] is False and done_a["timings"]["cold_start"] == 0  # it was already up
        pid_a = pid_of(ev)
        assert run_cell(a, "# %%gpu\nx = 1", "a-2")[-1]["worker"] == done_a["worker"]

        b = BackendClient(url, TOKEN, "s-b")  # a second session while s-a holds the dedicated worker
        clients.append(b)
        ev_b = run_cell(b, PID_CELL, "b-1")
        done_b = ev_b[-1]
        assert done_b["status"] == "ok" and done_b["pool"] == "serverless" and done_b["cold"] is True, done_b
        assert done_b["worker"] != done_a["worker"] and pid_of(ev_b) != pid_a

        a.send({"type": messages.RELEASE})  # s-a lets its dedicated worker go: it is recycled
        reply = a.recv(timeout=30)
        assert reply is not None and reply.header.get("released") == 1, reply and reply.header
        assert not alive(pid_a), "the released dedicated worker's process is still running"
        info = get(url, "/api/runtime?wait=60")  # waits until the fresh dedicated worker is free
        assert info["dedicated"] == {"cpu": {"size": 1, "live": 1, "free": 1}}, info

        c = BackendClient(url, TOKEN, "s-c")
        clients.append(c)
        ev_c = run_cell(c, PID_CELL + "\nprint('x' in dir())", "c-1")
        done_c = ev_c[-1]
        assert done_c["pool"] == "dedicated" and done_c["cold"] is False
        assert done_c["worker"] != done_a["worker"] and pid_of(ev_c) != pid_a  # a fresh process
        assert "False" in "".join(e.get("text", "") for e in ev_c)  # s-a's x did not reach s-c

        pools = get(url, "/api/pools")
        assert pools["dedicated"] == {"cpu": {"size": 1, "live": 1, "free": 0}}
        ded, srv = pools["pools"]["dedicated"]["cpu"], pools["pools"]["serverless"]["cpu"]
        assert ded["workers"] == 2 and ded["cells"] == 3 and srv["workers"] == 1 and srv["cells"] == 1
        # a dedicated worker is billed for its whole life: its idle seconds are the pool's
        assert ded["worker_s"] > ded["busy_s"] > 0 and ded["idle_s"] > 0

        # its keep-warm running out recycles it too (the worker retires; a fresh one takes its place)
        done_c2 = run_cell(c, "# %%gpu\nx = 2", "c-2", keep_warm=0.5)[-1]
        assert done_c2["pool"] == "dedicated" and done_c2["worker"] == done_c["worker"]
        info = get(url, "/api/runtime?wait=60")  # waits until the replacement is up and free
        assert info["dedicated"] == {"cpu": {"size": 1, "live": 1, "free": 1}}, info
        assert get(url, "/api/pools")["pools"]["dedicated"]["cpu"]["workers"] == 3
    finally:
        for c in clients:
            c.close()
        stop_backend(proc)

    db = sqlite3.connect(tmp_path / "ledger.sqlite3")
    workers = dict(db.execute("SELECT id, pool FROM workers"))
    assert workers[done_a["worker"]] == "dedicated" and workers[done_c["worker"]] == "dedicated"
    assert workers[done_b["worker"]] == "serverless"
    cells = {cid.split("/", 1)[1]: pool for cid, pool in db.execute("SELECT id, pool FROM cells")}  # "session/cell"
    assert cells == {"a-1": "dedicated", "a-2": "dedicated", "b-1": "serverless", "c-1": "dedicated",
                     "c-2": "dedicated"}, cells


def test_dedicated_for_a_type_not_offered_is_refused(tmp_path):
    r = subprocess.run([sys.executable, "-m", "jupyter_gpu_backend", "--dedicated", "H100=2",
                        "--ledger", str(tmp_path / "l.sqlite3")], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "JUPYTER_GPU_ZYGOTE": "0"})
    assert r.returncode == 2 and "--dedicated H100: this runtime offers only" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "jupyter_gpu_backend", "--dedicated", "cpu"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "use GPU=N" in r.stderr, r.stderr


def test_a_cell_waiting_in_the_line_takes_a_dedicated_worker_that_comes_free(tmp_path):
    proc, url = start_backend(tmp_path, "--token", TOKEN, "--dedicated", "cpu=1", "--max-workers", "1",
                              "--keep-warm", "60")
    clients = []
    try:
        assert get(url, "/api/runtime?wait=60")["ready"]
        a, b, c = (BackendClient(url, TOKEN, f"s-{n}") for n in "abc")
        clients += [a, b, c]
        assert run_cell(a, "# %%gpu\nx = 1", "a-1")[-1]["pool"] == "dedicated"
        done_b = run_cell(b, "# %%gpu\nx = 1", "b-1")[-1]
        assert done_b["pool"] == "serverless"  # b's warm lease holds the only max_workers slot
        c.send({"type": "execute", "cell": "c-1", "code": "# %%gpu\nx = 3", "gpu": "cpu", "inputs": {},
                "keep": {}, "binds": []})
        first = c.recv(timeout=60)
        assert first is not None and first.header.get("phase") == "queued" and first.header["position"] == 1
        a.send({"type": messages.RELEASE})  # the dedicated worker is recycled and goes to c, in line
        assert a.recv(timeout=30).header.get("released") == 1
        events = []
        while not events or events[-1]["type"] not in (messages.DONE, messages.FAILURE):
            msg = c.recv(timeout=60)
            assert msg is not None, f"c-1 never left the line; got {events}"
            events.append(msg.header)
        done_c = events[-1]
        assert done_c["status"] == "ok" and done_c["pool"] == "dedicated" and done_c["cold"] is False
        assert done_c["timings"]["queue"] > 0
        assert run_cell(b, "# %%gpu\nx = 2", "b-2")[-1]["worker"] == done_b["worker"]  # b kept its own
        # c-1 is out of the line (nothing of it is left queued)
        assert get(url, "/api/queue")["queued"] == []
    finally:
        for cl in clients:
            cl.close()
        stop_backend(proc)
