"""The zygote's imports take only idle CPU: the thread that runs them has idle priority, and the
thread that forks the workers keeps its own."""
import os
import threading

import pytest

from jupyter_gpu_worker import zygote


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_the_preload_thread_is_idle_priority_and_the_main_thread_is_untouched():
    before = os.sched_getscheduler(0)
    seen = {}

    def run():
        zygote._idle_priority()
        seen["policy"] = os.sched_getscheduler(0)

    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    assert seen["policy"] == os.SCHED_IDLE
    assert os.sched_getscheduler(0) == before  # (per thread, not per process)
