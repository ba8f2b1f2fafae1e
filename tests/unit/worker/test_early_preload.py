"""The early worker's preload beside a kernel's start (agent.preload_early): it imports the listed
modules in order, at the quiet start's priority, skips what is not installed or fails, and stops as
soon as a request waits, so that a first cell never waits for more than the import in progress.
Real imports of modules written for the test, in this process."""
import os
import queue
import sys
import threading

import pytest

from jupyter_gpu._wire.priority import QUIET_NICE
from jupyter_gpu_worker.agent import preload_early

PROBE = """
import os, sys, threading
SEEN = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
"""


@pytest.fixture
def modules(tmp_path, monkeypatch):
    """Writes modules (name -> source) on a path of their own; removed from sys.modules after."""
    written = []

    def write(**sources):
        for name, src in sources.items():
            (tmp_path / f"{name}.py").write_text(src)
            written.append(name)

    monkeypatch.syspath_prepend(str(tmp_path))
    yield write
    for name in written:
        sys.modules.pop(name, None)


def preload(monkeypatch, names, requests=None):
    monkeypatch.setenv("JUPYTER_GPU_EARLY_PRELOAD", ",".join(names))
    return preload_early(requests if requests is not None else queue.SimpleQueue())


def test_the_listed_modules_are_imported_in_order_at_the_quiet_priority(modules, monkeypatch):
    modules(jgp_one=PROBE, jgp_two="import jgp_one\nAFTER_ONE = True\n")
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert preload(monkeypatch, ["jgp_one", "jgp_two"]) == ["jgp_one", "jgp_two"]
    assert sys.modules["jgp_two"].AFTER_ONE
    assert sys.modules["jgp_one"].SEEN == max(QUIET_NICE, before)
    # the thread that goes on to run the cells keeps its priority
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before


def test_what_is_not_installed_or_fails_is_skipped_and_left_to_the_cell(modules, monkeypatch):
    modules(jgp_broken="raise RuntimeError('broken at import')\n", jgp_fine="X = 1\n")
    got = preload(monkeypatch, ["jgp_not_installed_anywhere", "jgp_broken", "jgp_fine"])
    assert got == ["jgp_fine"]
    assert "jgp_broken" not in sys.modules  # the cell that imports it gets the error itself
    with pytest.raises(RuntimeError, match="broken at import"):
        __import__("jgp_broken")


def test_a_waiting_request_stops_the_preload(modules, monkeypatch):
    modules(jgp_never="X = 1\n")
    requests = queue.SimpleQueue()
    requests.put({"type": "execute"})
    assert preload(monkeypatch, ["jgp_never"], requests) == []
    assert "jgp_never" not in sys.modules


def test_a_request_that_comes_during_an_import_gets_the_worker_after_that_one(modules, monkeypatch):
    """The first cell waits for the import in progress, not for the rest of the list."""
    requests = queue.SimpleQueue()
    modules(jgp_during="import builtins\nbuiltins._jgp_requests.put({'type': 'execute'})\n", jgp_after="X = 1\n")
    import builtins

    builtins._jgp_requests = requests  # the probe's way to the queue (a request arriving meanwhile)
    try:
        assert preload(monkeypatch, ["jgp_during", "jgp_after"], requests) == ["jgp_during"]
    finally:
        del builtins._jgp_requests
    assert "jgp_after" not in sys.modules
    assert requests.get_nowait() == {"type": "execute"}  # left for the main loop


def test_an_interrupt_during_the_preload_ends_it_and_the_worker_goes_on(modules, monkeypatch):
    """A SIGINT with no cell running (the worker's handler raises KeyboardInterrupt) must not end
    the worker before it serves: the preload stops there."""
    modules(jgp_first="X = 1\n", jgp_interrupted="raise KeyboardInterrupt\n", jgp_not_reached="X = 1\n")
    assert preload(monkeypatch, ["jgp_first", "jgp_interrupted", "jgp_not_reached"]) == ["jgp_first"]
    assert "jgp_not_reached" not in sys.modules


def test_nothing_is_preloaded_when_the_list_is_empty(monkeypatch):
    assert preload(monkeypatch, []) == []
