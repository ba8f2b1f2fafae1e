"""When the local runtime starts its zygotes (runtimes/local.py): after a pause of ZYGOTE_QUIET_S in
the spawns and the cells, and by ZYGOTE_LATEST_S after the backend began serving even when cells
never pause (a busy team backend, or one user keeping cells coming, would otherwise leave every other
cold start a spawn).  The timer logic on a real event loop; the zygote's process start is recorded
instead of made (the integration test in test_provisioner.py starts real ones)."""
from __future__ import annotations

import asyncio
import shutil

import pytest

from jupyter_gpu_backend.runtimes import local


@pytest.fixture
def runtime(monkeypatch):
    monkeypatch.setenv("JUPYTER_GPU_ZYGOTE", "1")
    monkeypatch.setattr(local, "ZYGOTE_QUIET_S", 0.3)
    monkeypatch.setattr(local, "ZYGOTE_LATEST_S", 1.0)
    rt = local.LocalRuntime("ws://127.0.0.1:1/ws/worker")
    yield rt
    shutil.rmtree(rt.log_dir, ignore_errors=True)


def record_starts(monkeypatch, started: asyncio.Event, at: list):
    loop = asyncio.get_running_loop()

    def start(zygote):
        at.append(loop.time())
        started.set()

    monkeypatch.setattr(local.Zygote, "start", start)


def test_cells_postpone_the_zygotes_until_they_pause(runtime, monkeypatch):
    async def go():
        started, at = asyncio.Event(), []
        record_starts(monkeypatch, started, at)
        loop = asyncio.get_running_loop()
        await runtime.prepare()
        for _ in range(4):  # a cell every 0.1 s for 0.4 s: longer than the quiet time
            runtime.cells_seen()
            await asyncio.sleep(0.1)
        assert not started.is_set(), "the zygotes started while cells still came"
        last = loop.time()
        await asyncio.wait_for(started.wait(), 5)
        assert at[0] >= last - 0.1 + local.ZYGOTE_QUIET_S - 0.05  # a quiet time after the last cell

    asyncio.run(go())


def test_cells_that_never_pause_do_not_keep_the_zygotes_from_starting(runtime, monkeypatch):
    async def go():
        started, at = asyncio.Event(), []
        record_starts(monkeypatch, started, at)
        loop = asyncio.get_running_loop()
        await runtime.prepare()
        served = loop.time()
        while not started.is_set():  # cells every 0.05 s, for as long as it takes
            assert loop.time() - served < 5, "the zygotes never started under a steady stream of cells"
            runtime.cells_seen()
            await asyncio.sleep(0.05)
        assert local.ZYGOTE_LATEST_S - 0.05 <= at[0] - served <= local.ZYGOTE_LATEST_S + 0.5
        assert len(at) == len(runtime.zygotes)  # each image's once
        timer = runtime._zygotes_after
        runtime.cells_seen()  # once started, later cells schedule nothing more
        assert runtime._zygotes_after is timer

    asyncio.run(go())
