"""A pre-imported process that forks workers: a cold start costs a fork, not an interpreter start
and its imports (~1 s with torch here; a fork from a zygote that imported it: ~20-30 ms).

Protocol with the runtime that started it, one JSON object per line:
    stdin   {"worker": id, "url": ws url, "secret": s, "env": {...}, "log": path, "sandbox": plan or null}
    stdout  {"ready": true, "preloaded": [...], "import_s": t,   once, after the imports
             "site": {site-packages dir: mtime_ns before them}}
            {"forked": id, "pid": n}                              per request
            {"exited": pid, "code": c}                            per child that ended (code < 0: signal)
The zygote starts no thread once it serves (threads do not survive a fork): its imports run on one
thread of idle priority that has ended by then (_preload); children reap through SIGCHLD, which
wakes the main loop through a pipe.
"""
from __future__ import annotations

import gc
import importlib
import json
import os
import select
import signal
import sys
import time
from jupyter_gpu._wire import settings, versions  # versions.BIRTH_NS: now, before any preload
from jupyter_gpu._wire.priority import run_lowered

# matplotlib, not matplotlib_inline's backend: the backend hooks into IPython when it is imported,
# which must happen in the worker, where the shell exists
DEFAULT_PRELOAD = settings.PRELOAD.default  # numpy, cloudpickle, IPython, matplotlib, torch


def _preload(names: list[str]) -> list[str]:
    loaded = []

    def imports() -> None:
        for name in names:
            try:
                importlib.import_module(name)
                loaded.append(name)
            except Exception:
                pass  # not installed here: a worker that needs it imports it itself
        # the worker's own modules, so a child imports nothing before it dials out
        from jupyter_gpu_worker import agent, device, shell  # noqa: F401

    # The imports (~2 s of a core with torch) are background work: they run on a thread of idle
    # priority, so they take only CPU that the kernels and workers leave (on 2 cores a matplotlib
    # notebook run as %%gpu took 1.45x local with them at normal priority beside it, 1.21x with no
    # zygote at all, 1.25x with them at idle priority).  On a thread (priority.py: why), so the
    # workers forked from this main thread get its priority, the normal one; it has ended before
    # any fork.
    run_lowered(imports, idle=True, name="zygote-preload")
    from jupyter_gpu_worker import shell

    shell.create_shell()  # (the shell starts no thread: history is off)
    return loaded


def _say(obj: dict) -> None:
    os.write(1, (json.dumps(obj) + "\n").encode())


def _child(req: dict) -> None:
    """In the forked child: become a worker (never returns)."""
    try:
        os.setsid()  # its own process group: a kill reaches it and whatever it starts
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        for k, v in req.get("env", {}).items():
            os.environ[k] = v
        os.environ[settings.WORKER_ID.name] = req["worker"]
        if req.get("sandbox"):  # the local runtime under --users: one thread here, as it needs
            from jupyter_gpu_worker import sandbox

            sandbox.enter(req["sandbox"], pid_namespace=True)  # born PID 1 of its own (_fork)
        from jupyter_gpu_worker import agent

        agent.main(["--url", req["url"]], secret=req["secret"])  # never in its environment (/proc shows that)
    except BaseException as e:  # noqa: BLE001 - a child must never return into the zygote loop
        print(f"worker {req.get('worker')} failed to start: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    finally:
        os._exit(1)


def main() -> None:
    t0 = time.monotonic()
    # its packages' directories as they are before it imports anything: the runtime starts a new
    # zygote once they changed (`%pip install` in the kernel's environment), see runtimes/local.py
    site = versions.site_dirs()
    site_stamp = dict(zip(site, versions.stamp(site)))
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # before matplotlib
    names = [n for n in settings.PRELOAD.get().split(",") if n]
    # the worker image's own `preload` (one that fails here fails each worker's start, with the
    # ImportError in its log: agent.preload_image)
    names += [n for n in settings.IMAGE_PRELOAD.get().split(",") if n and n not in names]
    loaded = _preload(names)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd is written
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _say({"ready": True, "preloaded": loaded, "import_s": time.monotonic() - t0, "pid": os.getpid(), "site": site_stamp})
    buf = b""
    while True:
        try:
            ready, _, _ = select.select([0, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in ready:
            os.read(wake_r, 4096)
        _reap()
        if 0 in ready:
            data = os.read(0, 65536)
            if not data:
                return  # the runtime is gone: so are we (children keep running until killed)
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    _fork(json.loads(line))


def _fork(req: dict) -> None:
    # what the zygote holds (its imports: numpy, IPython, torch...) goes to the collector's permanent
    # generation: a worker's collections never walk it.  A first sync of 10,000 files allocates ~10^5
    # objects in the worker, and its full collections walked every preloaded object: ~0.2 s of its
    # main thread (perf); walking them also wrote to their pages, copying them from the zygote's
    # (copy-on-write) in every worker
    gc.freeze()
    if req.get("sandbox"):  # the child is PID 1 of a new PID namespace (jupyter_gpu_worker/sandbox.py)
        from jupyter_gpu_worker import sandbox

        with sandbox.PidNamespaceForNextFork():
            pid = os.fork()
    else:
        pid = os.fork()
    if pid == 0:
        _child(req)
    _say({"forked": req["worker"], "pid": pid})


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _say({"exited": pid, "code": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    main()
