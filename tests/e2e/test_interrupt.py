"""The stop button: a first interrupt stops the remote code and keeps the worker; a second kills it."""
from __future__ import annotations

import re

import pytest

from .helpers import LOAD, strip_ansi


def _remote_pid(k) -> int:
    cell = k.run("%%gpu\nimport os\nprint(os.getpid())")
    return int(cell.stdout().strip())


def _error_text(cell) -> str:
    parts = []
    c = cell.reply["content"]
    parts += [c.get("ename", ""), c.get("evalue", "")] + list(c.get("traceback", []))
    for e in cell.errors():
        parts += [e.get("ename", ""), e.get("evalue", "")] + list(e.get("traceback", []))
    return strip_ansi("\n".join(parts))


@pytest.mark.timeout(180)
def test_interrupt_stops_remote_code_and_keeps_the_warm_worker(live_kernel):
    k = live_kernel
    k.run(LOAD)
    k.run("%%gpu\nmarker = 'alive'")
    pid_before = _remote_pid(k)

    cell = k.submit(
        "%%gpu\nimport time\nduring = 'set before the interrupt'\nprint('started', flush=True)\n"
        "for i in range(600):\n    time.sleep(0.1)\n"
    )
    assert k.wait_until(lambda: "started" in cell.stdout(), 60), "the remote cell never started"
    assert cell.reply is None
    t0 = k.interrupt()
    assert k.wait_until(lambda: cell.reply is not None, 15), "no execute_reply after an interrupt"
    took = cell.reply_at - t0
    content = cell.reply["content"]
    assert content["status"] == "error"
    assert content["ename"] == "KeyboardInterrupt"
    assert took < 3.0, f"interrupt took {took:.2f}s to end the cell"
    assert k.wait_until(lambda: cell.idle, 10)

    # Same worker, same namespace.
    after = k.run("%%gpu\nimport os\nprint(marker, '|', during, '|', os.getpid())")
    marker, during, pid_after = (s.strip() for s in after.stdout().split("|"))
    assert marker == "alive"
    assert during == "set before the interrupt"
    assert int(pid_after) == pid_before, "the worker was replaced after a plain interrupt"
    assert after.footers() and after.footers()[-1]["cold"] is False

    # The interrupted cell's footer says so.
    fs = cell.footers()
    assert fs and fs[-1]["status"] == "interrupted", fs


@pytest.mark.timeout(180)
def test_second_interrupt_kills_a_worker_that_ignores_sigint(live_kernel):
    k = live_kernel
    k.run(LOAD)
    pid_before = _remote_pid(k)

    cell = k.submit(
        "%%gpu\nimport signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "print('started', flush=True)\nfor i in range(600):\n    time.sleep(0.1)\n"
    )
    assert k.wait_until(lambda: "started" in cell.stdout(), 60), "the remote cell never started"
    k.interrupt()
    # The remote code ignores SIGINT: no reply comes in the next second.
    assert not k.wait_until(lambda: cell.reply is not None, 1.0), (
        "the cell ended on the first interrupt although its code ignores SIGINT: "
        + _error_text(cell)
    )
    t1 = k.interrupt()
    assert k.wait_until(lambda: cell.reply is not None, 15), "no execute_reply after a second interrupt"
    assert cell.reply_at - t1 < 10
    assert cell.reply["content"]["status"] == "error"
    text = _error_text(cell)
    # Contract: the error says the worker was killed ("worker killed" / "worker w-1 ... was killed").
    assert re.search(r"\bworker\b[^\n]{0,60}\bkilled\b", text, re.IGNORECASE), text
    assert k.wait_until(lambda: cell.idle, 10)

    # The next %%gpu cell runs, on a new worker.
    pid_after = _remote_pid(k)
    assert pid_after != pid_before
    fs = cell.footers()
    assert fs and fs[-1]["status"] == "killed", fs


@pytest.mark.timeout(180)
def test_interrupt_wakes_one_long_blocking_call_every_time(live_kernel):
    """A single `time.sleep(60)` is ended by the stop button at once, however the signal races."""
    k = live_kernel
    k.run(LOAD)
    k.run("%%gpu\nimport time")
    for attempt in range(8):
        cell = k.submit("%%gpu\nprint('sleeping', flush=True)\ntime.sleep(60)")
        assert k.wait_until(lambda: "sleeping" in cell.stdout(), 60), "the remote cell never started"
        t0 = k.interrupt()
        assert k.wait_until(lambda: cell.reply is not None, 15), f"attempt {attempt}: no reply after an interrupt"
        assert cell.reply_at - t0 < 5.0, f"attempt {attempt}: the sleep was interrupted only after {cell.reply_at - t0:.1f} s"
        assert cell.reply["content"]["ename"] == "KeyboardInterrupt"
        assert k.wait_until(lambda: cell.idle, 10)


@pytest.mark.timeout(180)
def test_interrupt_during_a_cold_start_stops_the_cell_and_keeps_the_new_worker(fresh_kernel_env):
    """The stop button pressed while a worker is starting: the cell never runs, the worker stays."""
    from tests.conftest import LiveKernel

    # spawned workers (no zygote) take a second or more to start: time to press the button; and no
    # early worker, which the embedded backend spawns before its own imports and may be up by then
    k = LiveKernel({**fresh_kernel_env, "JUPYTER_GPU_ZYGOTE": "0", "JUPYTER_GPU_EARLY_WORKER": "0"})
    try:
        k.run(LOAD)
        cell = k.submit("%%gpu\nran = True\nprint('ran')")
        live = lambda: any(e.msg["msg_type"] == "display_data" and "cold start" in str(e.msg["content"]["data"])
                           for e in cell.iopub)
        assert k.wait_until(live, 60), "no cold-start status line"
        assert cell.reply is None
        k.interrupt()
        assert k.wait_until(lambda: cell.done, 60)
        content = cell.reply["content"]
        assert content["ename"] == "KeyboardInterrupt", content
        assert "starting" in content["evalue"], content["evalue"]
        assert "ran" not in cell.stdout()
        assert cell.footers()[-1]["status"] == "interrupted"
        after = k.run("%%gpu\nprint('ran' in dir())")
        assert after.stdout().strip() == "False"  # the interrupted cell never ran on the worker
        assert after.footers()[-1]["cold"] is False  # the worker it started is the one now warm
    finally:
        k.shutdown()


@pytest.mark.timeout(180)
def test_interrupt_while_the_worker_loads_an_input_stops_the_cell_before_its_code(live_kernel):
    k = live_kernel
    k.run(LOAD)
    k.run("%%gpu\nkept = 'warm'")
    # an input whose unpickling on the worker takes long (a big array being loaded, in miniature)
    k.run("def _load():\n    import time\n    print('loading', flush=True)\n    time.sleep(60)\n    return 1\n"
          "class SlowToLoad:\n    def __reduce__(self):\n        return (_load, ())\nslow = SlowToLoad()")
    cell = k.submit("%%gpu\nprint('the body ran')\nvalue = slow")
    assert k.wait_until(lambda: "loading" in cell.stdout(), 60), "the worker never started loading"
    t0 = k.interrupt()
    assert k.wait_until(lambda: cell.done, 15), "the stop button did not stop the loading"
    assert cell.reply_at - t0 < 5.0
    assert cell.reply["content"]["ename"] == "KeyboardInterrupt", _error_text(cell)
    assert "the body ran" not in cell.stdout()
    after = k.run("%%gpu\nprint(kept)")  # the same warm worker, its namespace intact
    assert after.stdout() == "warm\n" and after.footers()[-1]["cold"] is False
