"""min_warm: pre-started, unleased workers; a cold cell takes one (no cold start) and the pool refills."""

import pytest

from jupyter_gpu._client.connection import BackendClient

from .test_backend_robustness import run_cell
from .backend_process import runtime_info, start_backend, stop_backend

pytestmark = pytest.mark.timeout(120)
TOKEN = "min-warm-token"


def runtime(url, wait):
    return runtime_info(url, TOKEN, wait)


def test_cold_cells_take_a_prestarted_worker_and_the_pool_refills(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_GPU_MIN_WARM", "1")
    proc, url = start_backend(tmp_path, "--token", TOKEN)
    try:
        info = runtime(url, 60)  # waits on the zygote and on the pool, not a sleep
        assert info["ready"] and info["warm_pool"] == {"cpu": 1}, info
        workers = set()
        for session in ("s-one", "s-two"):
            c = BackendClient(url, TOKEN, session)
            done = run_cell(c, "# %%gpu\nx = 1", f"{session}-c1")[-1]
            assert done["status"] == "ok" and done["cold"] is False and done["timings"]["cold_start"] == 0
            workers.add(done["worker"])
            assert runtime(url, 60)["warm_pool"] == {"cpu": 1}, "the pool did not refill"
            c.close()
        assert len(workers) == 2  # each session got its own, never-used worker
    finally:
        stop_backend(proc)
