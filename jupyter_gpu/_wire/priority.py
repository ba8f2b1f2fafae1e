"""Work a process does at a lower priority than its own: a start's imports, on a thread that ends with
them.  Backend, worker and zygote use it.

A process cannot raise its priority back unprivileged (Linux: leaving SCHED_IDLE or lowering a nice
value needs RLIMIT_NICE, which is 0 by default), and on Linux both are per thread: so what must yield
runs on a thread of its own, and the main thread, which goes on to serve (and which a forked child
copies), keeps the process's priority.
"""
from __future__ import annotations

import os
import threading
from typing import Callable, TypeVar

T = TypeVar("T")

# A backend and its early worker started beside a kernel's own start (the jupyter-gpu kernelspec:
# _client/provisioner.py) import at nice +10: the kernel's start (~0.6 s of a core) then lost ~0.06 s
# to them on 2 cores instead of ~0.1 s, and they still were up before it (their ~0.45 s of imports got
# the CPU the kernel left).  Not idle priority: at +10 they still get ~10% of a core on a machine
# that is busy with other work, where a SCHED_IDLE thread could wait for as long as it stays busy.
QUIET_NICE = 10


def lower(idle: bool = False, nice: int = QUIET_NICE) -> None:
    """Lower the calling thread's priority: to SCHED_IDLE (``idle``: it runs only when a core would
    otherwise be idle), else by ``nice``; where that is not possible, the lowest nice value, or nothing."""
    if idle:
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return
        except (AttributeError, OSError):
            nice = 19
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(nice, os.getpriority(os.PRIO_PROCESS, tid)))
    except (AttributeError, OSError):
        pass


def run_lowered(fn: Callable[[], T], *, idle: bool = False, nice: int = QUIET_NICE, name: str = "lowered") -> T:
    """``fn()`` run on a thread of lowered priority (``lower``), waited for; its value, or its
    exception raised here."""
    out: dict = {}

    def run() -> None:
        lower(idle, nice)
        try:
            out["value"] = fn()
        except BaseException as e:  # (re-raised in the caller's thread)
            out["error"] = e

    t = threading.Thread(target=run, name=name)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]
