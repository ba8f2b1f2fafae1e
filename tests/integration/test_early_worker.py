"""--early-worker (what a kernel asks of the embedded backend it starts): one worker starts with the
backend, the first cell takes it without a cold start of its own, nothing replaces it, and nobody
pays for it for long when no cell comes (stopped after keep_warm)."""

import json
import os
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from jupyter_gpu._client.connection import BackendClient

from .backend_process import api_get, runtime_info, start_backend, stop_backend
from .test_backend_robustness import run_cell

pytestmark = pytest.mark.timeout(120)
TOKEN = "early-worker-token"


def workers_started(url: str, token: str = TOKEN) -> int:
    """Workers the backend has started so far, whatever became of them (the ledger's pools)."""
    pools = api_get(url, token, "/api/pools")["pools"]
    return sum(p["workers"] for kind in pools.values() for p in kind.values())


def test_the_first_cell_takes_the_early_worker_and_nothing_replaces_it(tmp_path):
    proc, url = start_backend(tmp_path, "--token", TOKEN, "--early-worker", "default")
    try:
        c = BackendClient(url, TOKEN, "s-first")
        # sent at once: the early worker is still starting, and the cell waits for it
        first = run_cell(c, "# %%gpu\nx = 1", "c1")[-1]
        assert first["status"] == "ok", first
        assert workers_started(url) == 1, "the cell started a worker beside the early one"
        second = run_cell(c, "# %%gpu\nx = 2", "c2")[-1]
        assert second["worker"] == first["worker"] and second["cold"] is False
        c.close()
        assert runtime_info(url, TOKEN, 60)["warm_pool"] == {"cpu": 0}, "the early worker was replaced"
        other = BackendClient(url, TOKEN, "s-other")
        done = run_cell(other, "# %%gpu\nx = 3", "c3")[-1]
        assert done["cold"] is True and done["worker"] != first["worker"]  # a start of its own
        other.close()
    finally:
        stop_backend(proc)


def test_a_cell_after_the_early_worker_is_up_has_no_cold_start(tmp_path):
    proc, url = start_backend(tmp_path, "--token", TOKEN, "--early-worker", "cpu")
    try:
        assert runtime_info(url, TOKEN, 60)["warm_pool"] == {"cpu": 1}  # waits on the pool, not a sleep
        c = BackendClient(url, TOKEN, "s-late")
        done = run_cell(c, "# %%gpu\nx = 1", "c1")[-1]
        assert done["status"] == "ok" and done["cold"] is False and done["timings"]["cold_start"] == 0
        c.close()
    finally:
        stop_backend(proc)


def test_an_early_worker_no_cell_takes_stops_after_keep_warm(tmp_path):
    proc, url = start_backend(tmp_path, "--token", TOKEN, "--early-worker", "default", "--keep-warm", "2")
    try:
        runtime_info(url, TOKEN, 0)  # it serves: the early worker was spawned before that
        workers = [p for p in psutil.Process(proc.pid).children()
                   if "jupyter_gpu_worker" in " ".join(p.cmdline()) and "zygote" not in " ".join(p.cmdline())]
        assert len(workers) == 1, workers
        workers[0].wait(timeout=60)  # its exit is the event: stopped, unleased, after keep_warm
        assert runtime_info(url, TOKEN, 0)["warm_pool"] == {"cpu": 0}
        assert workers_started(url) == 1
    finally:
        stop_backend(proc)


def test_an_early_worker_of_a_type_not_offered_is_none_and_the_backend_serves(tmp_path):
    proc, url = start_backend(tmp_path, "--token", TOKEN, "--early-worker", "H100")
    try:
        info = runtime_info(url, TOKEN, 60)
        assert info["ready"] and info["warm_pool"] == {}, info
        assert "--early-worker H100" in (tmp_path / "log").read_text()  # said in the log, with the reason
    finally:
        stop_backend(proc)



def start_embedded(d, *extra: str, env: dict | None = None, info=None):
    """The backend as a kernel starts it (jupyter_gpu/_client/embedded.py), own ledger and log;
    (process, runtime file path)."""
    info = info or d / "backend.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_gpu_backend", "--embedded", "--runtime-file", str(info), *extra],
        stdout=open(d / "log", "ab"), stderr=subprocess.STDOUT,
        env={**os.environ, "JUPYTER_GPU_LEDGER": str(d / "ledger.sqlite3"), **(env or {})})
    return proc, info


def worker_processes(marker: str) -> list:
    """This test's worker processes, wherever they were reparented: by a variable they inherited."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if "jupyter_gpu_worker" in " ".join(p.info["cmdline"] or ()) and p.environ().get("JG_TEST_MARK") == marker:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def test_a_kernels_embedded_backend_spawns_the_early_worker_first_and_the_first_cell_runs_on_it(tmp_path):
    """The exact command line a kernel gives (--embedded --runtime-file F --early-worker default), no
    GPU here: the worker is spawned before the server's imports (prestart.py), so it exists by the
    time the runtime file does; the runtime takes it as the early spare's start, the first cell
    runs on it, and no other worker is started."""
    marker = uuid.uuid4().hex
    proc, info_path = start_embedded(tmp_path, "--early-worker", "default", env={"JG_TEST_MARK": marker})
    try:
        while not info_path.exists():
            assert proc.poll() is None, (tmp_path / "log").read_text()
            time.sleep(0.02)  # waiting on another process's file: there is no event to wait on
        spawned = worker_processes(marker)
        assert len(spawned) == 1, spawned
        worker_id = spawned[0].environ()["JUPYTER_GPU_WORKER_ID"]
        info = json.loads(info_path.read_text())
        c = BackendClient(info["url"], info["token"], "s-pre")
        first = run_cell(c, "# %%gpu\nx = 1", "c1")[-1]
        assert first["status"] == "ok" and first["worker"] == worker_id, first
        c.close()
        assert workers_started(info["url"], info["token"]) == 1
    finally:
        stop_backend(proc)
    psutil.wait_procs(spawned, timeout=30)
    assert not worker_processes(marker), "the backend stopped, its worker did not"


def test_an_early_worker_spawned_for_a_backend_that_then_fails_does_not_outlive_it(tmp_path):
    marker = uuid.uuid4().hex
    (tmp_path / "a-file").write_text("")
    # its runtime file's directory would be a file: the backend fails after its worker was spawned
    proc, _ = start_embedded(tmp_path, "--early-worker", "cpu", env={"JG_TEST_MARK": marker},
                             info=tmp_path / "a-file" / "backend.json")
    assert proc.wait(60) != 0
    assert "a-file" in (tmp_path / "log").read_text()  # it says why
    gone, alive = psutil.wait_procs(worker_processes(marker), timeout=30)
    assert not alive, alive
