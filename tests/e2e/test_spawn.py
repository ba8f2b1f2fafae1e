"""`f.spawn` / `FunctionCall` (issue 22, durable jobs): on a real kernel, embedded backend and
workers; a call outlives the kernel that spawned it and the backend that ran it."""
from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.conftest import LiveKernel, strip_ansi

from .helpers import LOAD, kill_embedded_backend

pytestmark = pytest.mark.timeout(300)

DEFINE = """\
import jupyter_gpu, time, os
from jupyter_gpu import FunctionCall

@jupyter_gpu.function(gpu="cpu")
def slow(x, wait=0.0, flag=None):
    print(f"working on {x}")
    if flag:
        open(flag, "w").close()
    time.sleep(wait)
    if x < 0:
        raise ValueError(f"negative {x}")
    return x * 10
"""

WAIT_FOR = """\
deadline = time.monotonic() + 60
while not os.path.exists({flag!r}) and time.monotonic() < deadline:
    time.sleep(0.05)
print(os.path.exists({flag!r}))
"""


def kernel(env) -> LiveKernel:
    k = LiveKernel(env)
    k.run(LOAD)
    k.run(DEFINE)
    return k


def value_of(cell) -> str:
    return cell.stdout().strip().splitlines()[-1]


def test_spawn_get_streams_the_output_where_it_is_asked_and_returns_the_value(kernel_env):
    k = kernel(kernel_env)
    try:
        spawned = k.run("fc = slow.spawn(4)\nprint(fc.object_id)")
        jid = spawned.stdout().strip()
        assert jid.startswith("fc-")
        shown = [e.msg["content"]["data"] for e in spawned.iopub if e.msg["msg_type"] == "display_data"]
        assert any(d.get("application/vnd.jupyter-gpu.call+json", {}).get("id") == jid for d in shown), shown
        got = k.run("print(fc.get())")
        assert got.stdout() == "working on 4\n40\n"  # the call's output, in the cell that asked for it
        assert got.footers() and got.footers()[0]["calls"] == 1  # its cost, counted once in this kernel
        again = k.run("print(fc.get(), FunctionCall.gather(slow.spawn(1), slow.spawn(2)))")
        assert again.stdout() == "working on 4\nworking on 1\nworking on 2\n40 [10, 20]\n"
        assert again.footers()[0]["calls"] == 2  # fc was counted already
        # an exception is the user's own, with the worker's traceback
        err = k.run("slow.spawn(-1).get()", ok=False)
        assert err.reply["content"]["ename"] == "ValueError" and "negative -1" in err.reply["content"]["evalue"]
        assert "Cell In[" in strip_ansi("\n".join(err.reply["content"]["traceback"]))
        # a map: one handle, results in order, an item's failure named or returned
        m = k.run("print(slow.spawn_map([3, 1, 2]).get())\n"
                  "r = slow.spawn_map([5, -5], return_exceptions=True).get()\nprint(r[0], type(r[1]).__name__)")
        assert value_of(m) == "50 ValueError" and "[30, 10, 20]" in m.stdout()
        failed = k.run("slow.spawn_map([1, -2]).get()", ok=False)
        assert failed.reply["content"]["ename"] == "ItemFailed" and "item 1" in failed.reply["content"]["evalue"]
        # get(timeout=) gives up (a TimeoutError) while the call runs on; a later get has it
        t = k.run("late = slow.spawn(7, wait=3)\ntry:\n    late.get(timeout=0.2)\nexcept TimeoutError as e:\n"
                  "    print(type(e).__name__, late.object_id in str(e))\nprint(late.get())")
        assert "CallTimeout True" in t.stdout().splitlines() and value_of(t) == "70"
        assert t.stdout().count("working on 7") == 1  # its output once in the cell, though asked twice
        listed = k.run("print([c.object_id for c in jupyter_gpu.calls()])")
        assert jid in listed.stdout()
    finally:
        k.shutdown()


def test_cancel_stops_a_running_call_and_get_says_so(kernel_env, tmp_path):
    k = kernel(kernel_env)
    flag = str(tmp_path / "started")
    try:
        k.run(f"fc = slow.spawn(9, wait=120, flag={flag!r})")
        assert k.run(WAIT_FOR.format(flag=flag)).stdout() == "True\n"  # it runs on a worker now
        cell = k.run("fc.cancel()\nprint(fc.state)\ntry:\n    fc.get()\nexcept jupyter_gpu.errors.CallCancelled as e:\n"
                     "    print('cancelled:', e)", timeout=60)
        out = cell.stdout().splitlines()
        assert out[0] == "cancelled" and out[-1].startswith("cancelled: spawned call fc-"), out
        assert value_of(k.run("print(slow.spawn(2).get())")) == "20"  # the next call runs as usual
    finally:
        k.shutdown()


def test_a_call_outlives_its_kernel_and_its_result_its_backend(fresh_kernel_env, tmp_path):
    env = fresh_kernel_env
    flag = str(tmp_path / "long-started")
    k = kernel(env)
    try:
        quick = value_of(k.run("q = slow.spawn(3, wait=1.5)\nprint(q.object_id)"))
    finally:
        k.shutdown()  # the kernel is gone before the call ends
    k2 = kernel(env)
    try:
        got = k2.run(f"print(FunctionCall.from_id({quick!r}).get())")
        assert got.stdout() == "working on 3\n30\n"
        assert quick in k2.run("print([c.object_id for c in jupyter_gpu.calls()])").stdout()
        long = value_of(k2.run(f"l = slow.spawn(8, wait=300, flag={flag!r})\nprint(l.object_id)"))
        assert k2.run(WAIT_FOR.format(flag=flag)).stdout() == "True\n"
        # the backend dies (SIGKILL: no chance to say anything) while `long` runs
        assert kill_embedded_backend(env, signal.SIGKILL)
        # the next request starts a new embedded backend: the ended call's result is there, the
        # running one says it was lost, at once
        after = k2.run(f"print(FunctionCall.from_id({quick!r}).get())\n"
                       f"try:\n    FunctionCall.from_id({long!r}).get()\n"
                       "except jupyter_gpu.errors.CallLost as e:\n    print('lost:', e)", timeout=90)
        lines = after.stdout().splitlines()
        assert lines[:2] == ["working on 3", "30"] and lines[-1].startswith(f"lost: spawned call {long} was lost"), lines
        missing = k2.run("FunctionCall.from_id('fc-0000000000000000')", ok=False)
        assert missing.reply["content"]["ename"] == "NoSuchCall"
    finally:
        k2.shutdown()





def test_the_stop_button_during_get_stops_the_wait_not_the_call(kernel_env):
    k = kernel(kernel_env)
    try:
        cell = k.submit("fc = slow.spawn(5, wait=120)\nfc.get()")
        assert k.wait_until(lambda: "working on 5" in cell.stdout(), 60)  # it runs, its output here
        k.interrupt()
        assert k.wait_until(lambda: cell.done, 30)
        content = cell.reply["content"]
        assert content["ename"] == "KeyboardInterrupt" and "runs on" in content["evalue"], content
        state = k.run("print(fc.info()['state'])\nfc.cancel()\nprint(fc.state)").stdout().split()
        assert state == ["running", "cancelled"]
    finally:
        k.shutdown()


def test_a_result_is_let_go_when_its_time_is_up(fresh_kernel_env):
    env = {**fresh_kernel_env, "JUPYTER_GPU_JOB_TTL": "2s"}  # (read by the embedded backend it starts)
    k = kernel(env)
    try:
        cell = k.run("fc = slow.spawn(6)\nprint(fc.get())\ninfo = fc.info()\nprint(info['state'], "
                     "round(info['expires'] - info['finished'], 1))\n"
                     "deadline = time.monotonic() + 30\n"
                     "while fc.info()['state'] != 'expired' and time.monotonic() < deadline:\n    time.sleep(0.2)\n"
                     "print(fc.state)\ntry:\n    fc.get()\nexcept jupyter_gpu.errors.NoSuchCall as e:\n    print(e)")
        lines = cell.stdout().splitlines()
        assert lines[1:4] == ["60", "done 2.0", "expired"], lines
        assert lines[4].startswith("spawned call fc-") and "was expired" in lines[4]
        store = Path(env["JUPYTER_GPU_LEDGER"]).parent / "jobs"  # (beside the ledger)
        assert store.is_dir() and not list(store.glob("*.frames"))  # its stored result is gone too
    finally:
        k.shutdown()
