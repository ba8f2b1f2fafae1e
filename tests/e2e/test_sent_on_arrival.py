"""A warm `%%gpu` cell goes to its worker as its execute_request arrives (jupyter_gpu/notebook/early.py),
while the kernel still does its own bookkeeping.  Such a cell must behave exactly like one sent by
its magic; one that something could change before the magic runs must not go early; and one sent
whose magic never runs is interrupted, its output and cost still shown."""
from __future__ import annotations

import time

import pytest

from .helpers import LOAD, strip_ansi

pytestmark = pytest.mark.timeout(180)


def _sent(k) -> int:
    return int(k.run("import jupyter_gpu; print(jupyter_gpu._magics.session.sent_on_arrival)").stdout())


def _stop_before_the_magic(k) -> None:
    """Make IPython stop before it reaches the next cell's magic, as a stop press at that moment
    does (the next cell raises KeyboardInterrupt instead of running)."""
    k.run("_ip = get_ipython()\n_run = _ip.run_cell\n"
          "def _stopped_first(raw_cell, *args, **kwargs):\n"
          "    _ip.run_cell = _run\n"
          "    return _run('raise KeyboardInterrupt', *args, **kwargs)\n"
          "_ip.run_cell = _stopped_first")


def test_a_warm_cell_is_sent_as_it_arrives_and_behaves_like_one_its_magic_sent(live_kernel):
    k = live_kernel
    k.run(LOAD)
    k.run("%%gpu\nbase = 1")  # cold, relayed by the backend: the lane comes with its `done`
    before = _sent(k)
    k.run("base = 41")  # changed here since the worker got it: it must go again
    cell = k.run("%%gpu\nprint('sum', base + 1)\nanswer = base + 1\nanswer")
    assert cell.stdout() == "sum 42\n"
    results = [e.msg["content"] for e in cell.iopub if e.msg["msg_type"] == "execute_result"]
    assert [r["data"]["text/plain"] for r in results] == ["42"]
    assert results[0]["execution_count"] == cell.reply["content"]["execution_count"]
    assert cell.footers()[-1]["route"] == "lane"

    bad = k.run("%%gpu\nx = 1\n1 / 0", ok=False)
    n = bad.reply["content"]["execution_count"]
    tb = strip_ansi("\n".join(bad.reply["content"]["traceback"]))
    assert bad.reply["content"]["ename"] == "ZeroDivisionError"
    assert f"Cell In[{n}], line 2" in tb, tb  # the cell's own number and its body's line, as if run here
    assert _sent(k) == before + 2
    assert k.run("print(answer, x)").stdout() == "42 1\n"


def test_a_cell_that_something_could_change_before_its_magic_runs_waits_for_the_magic(live_kernel):
    k = live_kernel
    k.run(LOAD)
    k.run("%%gpu\nv = 'from the worker'")
    # a pre_run_cell hook runs after the request arrives and before the magic: it may change
    # what the cell reads, so the cell must see the value the hook left for it
    k.run("_n = [0]\ndef _set_v(info):\n    _n[0] += 1\n    get_ipython().user_ns['v'] = f'hook {_n[0]}'\n"
          "get_ipython().events.register('pre_run_cell', _set_v)")
    before = _sent(k)
    seen = k.run("%%gpu\nprint(v)").stdout()
    calls = int(k.run("print(_n[0])").stdout())  # this cell ran the hook once more
    assert seen == f"hook {calls - 1}\n"
    k.run("get_ipython().events.unregister('pre_run_cell', _set_v)")
    # IPython expands $name in a magic's line only as the magic runs
    k.run("kw = '60s'")
    f = k.run("%%gpu --keep-warm $kw\ny = 2").footers()[-1]
    assert f["keep_warm"] == 60, f
    assert _sent(k) == before
    assert k.run("%%gpu\nprint(v, y)").stdout() == f"hook {calls + 1} 2\n"  # the unregistering cell ran it too
    assert _sent(k) == before + 1  # a plain cell goes early again


def test_a_cell_sent_early_whose_magic_never_runs_is_interrupted_and_its_cost_shown(live_kernel):
    k = live_kernel
    k.run(LOAD)
    worker = k.run("%%gpu\nstarted = 0").footers()[-1]["worker"]
    before = _sent(k)
    _stop_before_the_magic(k)
    t0 = time.monotonic()
    cell = k.run("%%gpu\nimport time\nstarted = 1\ntime.sleep(60)", ok=False, timeout=90)
    assert time.monotonic() - t0 < 30, "the remote cell was not interrupted"
    assert cell.reply["content"]["ename"] == "KeyboardInterrupt"
    told = "".join(e.msg["content"]["text"] for e in cell.streams("stderr"))
    assert f"already been sent to worker {worker}" in told, told
    f = cell.footers()[-1]
    assert (f["worker"], f["status"], f["route"]) == (worker, "interrupted", "lane"), f
    assert cell.iopub[-2].msg["msg_type"] == "display_data"  # the footer is its last output (then idle)
    assert _sent(k) == before + 1
    again = k.run("%%gpu\nprint('warm', started in (0, 1))")
    assert again.stdout() == "warm True\n"
    assert again.footers()[-1]["worker"] == worker  # the worker stayed warm


def test_the_stop_button_while_a_cell_is_packed_on_arrival_stops_that_cell_only(live_kernel):
    k = live_kernel
    k.run(LOAD)
    k.run("%%gpu\nwarm = 1")
    # a value whose pickling is where the stop press lands (as in packing a large input)
    k.run("class Stopper:\n    def __reduce__(self):\n        raise KeyboardInterrupt\nstopper = Stopper()")
    cell = k.run("%%gpu\nprint(stopper)", ok=False, timeout=60)
    assert cell.reply["content"]["ename"] == "KeyboardInterrupt"
    assert cell.stdout() == ""
    after = k.run("%%gpu\nprint('next', warm)")
    assert after.stdout() == "next 1\n"
    assert after.footers()[-1]["route"] == "lane"


def test_a_warm_cell_the_backend_relays_is_sent_as_it_arrives_too(fresh_kernel_env):
    """Without a lane (a worker on another host, or lanes off) the backend relays a warm cell: it
    is sent to the backend as its request arrives, and one whose magic never runs is interrupted
    through the backend."""
    from tests.conftest import LiveKernel

    k = LiveKernel({**fresh_kernel_env, "JUPYTER_GPU_LANE": "0"})
    try:
        k.run(LOAD)
        worker = k.run("%%gpu\nbase = 20").footers()[-1]["worker"]
        before = _sent(k)
        cell = k.run("%%gpu\nprint('got', base)\nbase * 2 + 2")
        assert cell.stdout() == "got 20\n"
        assert [e.msg["content"]["data"]["text/plain"] for e in cell.iopub
                if e.msg["msg_type"] == "execute_result"] == ["42"]
        assert (cell.footers()[-1]["route"], cell.footers()[-1]["worker"]) == ("backend", worker)
        assert _sent(k) == before + 1

        _stop_before_the_magic(k)
        t0 = time.monotonic()
        stopped = k.run("%%gpu\nimport time\ntime.sleep(60)", ok=False, timeout=90)
        assert time.monotonic() - t0 < 30, "the remote cell was not interrupted"
        f = stopped.footers()[-1]
        assert (f["route"], f["status"]) == ("backend", "interrupted"), f
        assert k.run("%%gpu\nprint(base)").stdout() == "20\n"
    finally:
        k.shutdown()


def test_a_warm_cell_queued_behind_a_failing_cell_is_aborted_and_never_reaches_its_worker(live_kernel):
    """After an error, ipykernel aborts the requests already queued (stop_on_error): a `%%gpu`
    cell among them must not run on its worker, though a warm cell is sent as its request arrives."""
    k = live_kernel
    k.run(LOAD)
    k.run("%%gpu\nruns = []")
    k.run("%%gpu\nruns.append('warm')")  # the lane is open: the next cells would go on arrival
    before = _sent(k)
    failing = k.submit("import time\ntime.sleep(1)\nraise ValueError('stop here')")
    queued = k.submit("%%gpu\nruns.append('queued')\nprint('ran')")
    assert k.wait_until(lambda: failing.done and queued.done, 60)
    assert failing.reply["content"]["status"] == "error"
    assert queued.reply["content"]["status"] == "aborted"
    assert queued.stdout() == "" and queued.footers() == []
    assert k.run("%%gpu\nprint(runs)").stdout() == "['warm']\n"  # the worker never ran it
    assert _sent(k) == before + 1  # only that last cell went on arrival
