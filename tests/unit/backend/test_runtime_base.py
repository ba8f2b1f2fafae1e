"""The runtime interface (runtimes/base.py): its optional parts' defaults, and stop, exit_cause,
log_tail and shutdown, written once for the three runtimes, with their hooks."""
from __future__ import annotations

import asyncio
import signal
import tempfile

import pytest

from jupyter_gpu_backend.runtimes.base import Runtime
from tests.unit.backend.fakes import FakeHandle, FakeRuntime


def test_the_required_parts_are_abstract():
    class Incomplete(Runtime):
        name = "incomplete"

        def offers(self):
            return ["cpu"]

    with pytest.raises(TypeError, match="kill"):
        Incomplete("ws://127.0.0.1:1/ws/worker")


def test_the_optional_parts_default_to_nothing_to_add():
    rt = FakeRuntime()
    assert rt.default_gpu() == "T4"  # the first type offered
    assert rt.max_devices() is None  # one device a worker
    assert rt.short_of("T4") is None  # it cannot say what a start waits for
    assert rt.waiting_for("T4") == ""
    assert rt.describe() == {}
    assert rt.shares_host is False
    assert asyncio.run(rt.wait_ready(0.0)) is True
    assert asyncio.run(rt.prepare()) is None


def test_stop_waits_for_the_exit_and_kills_past_the_grace():
    async def main():
        rt = FakeRuntime()
        exiting = await rt.start("cpu", "w-1", "s")
        asyncio.get_running_loop().call_later(0.01, exiting.exited.set_result, 0)
        await rt.stop(exiting, grace=2.0)
        stuck = await rt.start("cpu", "w-2", "s")
        await rt.stop(stuck, grace=0.05)
        return rt

    rt = asyncio.run(main())
    assert rt.killed == ["w-2"] and rt.workers == {}


def test_exit_cause_says_why_a_worker_is_gone():
    async def cause(result=None, error=None, timeout=1.0):
        rt = FakeRuntime()
        handle = await rt.start("cpu", "w-1", "s")
        if error is not None:
            handle.exited.set_exception(error)
        elif result is not None:
            handle.exited.set_result(result)
        return await rt.exit_cause(handle, timeout)

    assert asyncio.run(cause(3)) == "the process exited with code 3"
    assert asyncio.run(cause(-int(signal.SIGKILL))).startswith("the process was killed by SIGKILL (the kernel's out-of-memory")
    assert asyncio.run(cause(timeout=0.01)) == "its connection closed while the process kept running"
    assert asyncio.run(cause(error=ConnectionError("x"))) == (
        "its connection closed (its exit status is unknown: the process reporting it is gone)")


def test_log_tail_reads_the_end_of_the_log_or_says_it_is_missing(tmp_path):
    rt = FakeRuntime()
    log = tmp_path / "w.log"
    log.write_bytes(b"a" * 100 + b"the end")
    assert rt.log_tail(FakeHandle("w-1", str(log)), limit=7) == "the end"
    rt.missing_log = "(elsewhere)"
    assert rt.log_tail(FakeHandle("w-1")) == "(elsewhere)"


def test_shutdown_kills_every_worker_and_forgets_them():
    async def main():
        rt = FakeRuntime()
        for i in range(3):
            await rt.start("cpu", f"w-{i}", "s")
        await rt.shutdown()
        return rt

    rt = asyncio.run(main())
    assert rt.killed == ["w-0", "w-1", "w-2"] and rt.workers == {}


def test_the_local_runtime_implements_the_interface(tmp_path, monkeypatch):
    from jupyter_gpu_backend.runtimes.local import LocalRuntime

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # its workers' log directory
    rt = LocalRuntime("ws://127.0.0.1:1/ws/worker")
    assert isinstance(rt, Runtime) and rt.offers()[-1] == "cpu"
    assert rt.default_gpu() == rt.offers()[0]
    assert rt.max_devices() == rt.table.most()  # a dict: "A100:2" is checked against what it has
