"""A start's imports at a lower priority (_wire/priority.py: the zygote's at idle priority, a quiet
start's at nice +10): the thread that runs them has it, and the calling thread - the one that goes on
to serve, or to fork the workers - keeps its own."""
import os
import threading

import pytest

from jupyter_gpu._wire.priority import QUIET_NICE, run_lowered


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_an_idle_run_has_idle_priority_and_the_calling_thread_is_untouched():
    before = os.sched_getscheduler(0)
    seen = run_lowered(lambda: os.sched_getscheduler(0), idle=True)
    assert seen == os.SCHED_IDLE
    assert os.sched_getscheduler(0) == before  # (per thread, not per process)


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="per-thread nice values are Linux's")
def test_a_quiet_run_is_niced_and_its_value_and_errors_come_back():
    tid = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, tid)
    assert run_lowered(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())) == max(QUIET_NICE, before)
    assert os.getpriority(os.PRIO_PROCESS, tid) == before
    with pytest.raises(ModuleNotFoundError, match="no_such_module_here"):
        run_lowered(lambda: __import__("no_such_module_here"))
