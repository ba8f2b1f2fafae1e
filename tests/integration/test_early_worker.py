"""--early-worker (what a kernel asks of the embedded backend it starts): one worker starts with the
backend, the first cell takes it without a cold start of its own, nothing replaces it, and nobody
pays for it for long when no cell comes (stopped after keep_warm)."""

import psutil
import pytest

from jupyter_gpu._client.connection import BackendClient

from .backend_process import api_get, runtime_info, start_backend, stop_backend
from .test_backend_robustness import run_cell

pytestmark = pytest.mark.timeout(120)
TOKEN = "early-worker-token"


def workers_started(url: str) -> int:
    """Workers the backend has started so far, whatever became of them (the ledger's pools)."""
    pools = api_get(url, TOKEN, "/api/pools")["pools"]
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
