"""The local runtime's per-user sandbox (issue 24), entered by a worker right after its fork from
the zygote (or at its spawn), before it dials the backend, and made final at its first cell.

``enter(plan)`` (as root, single-threaded):
- new mount, PID and IPC namespaces; the worker is PID 1 of its own PID namespace: when it dies,
  the kernel kills everything its cells started (no process group to leave by ``setsid``).  A
  forked worker is born PID 1 (the zygote forks it inside ``PidNamespaceForNextFork``); a spawned
  one forks once more, and the process the runtime knows stays outside as a *keeper*: it waits for
  the worker and exits as it did (a signal: the same signal), and the worker dies with it
  (``PR_SET_PDEATHSIG``).
- its own ``/proc`` (only its own processes: not the backend's command line, not another user's
  worker's environment), and empty private ``/tmp``, ``/var/tmp`` and ``/dev/shm``.
- the directories in ``plan["hide"]`` (the backend user's home, its state: ledger, runtime files,
  jobs) under an empty tmpfs, except the paths in ``plan["keep"]`` (Python, the environments,
  the follow directories, the CA file of a TLS backend) bound back read-only, there or in /tmp; each file in ``plan["blank"]`` (the users file,
  the config file) shows as empty.
- the environment cut to ``plan["env"]``'s names (``PGPASSWORD`` and the backend's settings are not
  there).

``drop(uid)`` (the backend sends the uid of the cell's user with the first cell: a spare waits
unassigned as root, running only this code): the process becomes that unprivileged uid (its gid:
the workers' one group, ``plan["gid"]``, which may read the built environments and nothing else),
no supplementary groups, ``no_new_privs``; HOME is a private directory of its ``/tmp``.  From here
nothing of another user, of the backend, or of root is within its reach.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWPID = 0x00020000, 0x08000000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 32, 4096, 8192, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
STAGE = "/dev/shm/.jupyter-gpu-keep"  # where what stays visible waits while the rest is covered

_libc = ctypes.CDLL(None, use_errno=True)
_state = {"entered": False, "uid": None}


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source, target, fstype, flags, data=None) -> None:
    _check(_libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(),
                       ctypes.c_ulong(flags), data and data.encode()), f"mount {target}")


def entered() -> bool:
    return _state["entered"]


class PidNamespaceForNextFork:
    """In the zygote: its next fork's child is PID 1 of a new PID namespace (``with`` around the
    fork; after it the zygote's children are born in its own again: ``setns`` back).  So a forked
    worker needs no keeper and no second fork (~15 ms of page tables for a zygote that has torch)."""

    def __enter__(self):
        self._zygote = os.getpid()
        self._own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        _check(_libc.unshare(CLONE_NEWPID), "unshare")
        return self

    def __exit__(self, *exc):
        try:
            if os.getpid() == self._zygote:  # (the child leaves the block too: it is in the new one)
                _check(_libc.setns(self._own, CLONE_NEWPID), "setns")
        finally:
            os.close(self._own)


def enter(plan: dict, pid_namespace: bool = False) -> None:
    """Into the sandbox (see the module doc); returns in the worker, PID 1 of its namespace.
    ``pid_namespace``: this process is PID 1 of one already (forked under ``PidNamespaceForNextFork``)."""
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWIPC | (0 if pid_namespace else CLONE_NEWPID)), "unshare")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing done here is seen outside
    if not pid_namespace:  # a spawned worker: one more fork puts it in the new namespace
        pid = os.fork()
        if pid:
            _keep(pid)  # never returns
        # (a keeper killed before this line leaves a worker whose registration the backend refuses)
        _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")  # its own; the stage meanwhile
    private = [p for p in ("/tmp", "/var/tmp") if os.path.isdir(p)]
    keep = [p for p in dict.fromkeys(os.path.realpath(p) for p in plan.get("keep", ())) if os.path.exists(p)]
    hide = [p for p in dict.fromkeys(os.path.realpath(p) for p in plan.get("hide", ())) if os.path.isdir(p)]
    staged = []
    for i, path in enumerate(keep):  # what stays visible inside a hidden directory, set aside first
        if any(_inside(path, h) for h in hide + private):
            stage = f"{STAGE}/{i}"
            _mount_point(stage, os.path.isdir(path))
            _mount(path, stage, None, MS_BIND | MS_REC)
            staged.append((stage, path))
    for path in private:
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for path in sorted(hide, key=len):
        if not any(_inside(path, h) and path != h for h in hide + private):  # within another: hidden with it
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    for stage, path in staged:
        _mount_point(path, os.path.isdir(stage))
        _mount(stage, path, None, MS_MOVE)
        _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    for stage, _ in staged:
        os.rmdir(stage) if os.path.isdir(stage) else os.unlink(stage)
    if staged:
        os.rmdir(STAGE)
    for path in plan.get("blank", ()):
        if os.path.isfile(path):
            _mount("/dev/null", path, None, MS_BIND)
    wanted = set(plan.get("env", ()))
    for name in list(os.environ):
        if name not in wanted:
            del os.environ[name]
    _state["entered"] = True
    _state["gid"] = plan.get("gid", None)


def _mount_point(path: str, directory: bool) -> None:
    """An empty directory (or file) at ``path`` to mount on, with the directories above it."""
    if directory:
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.exists(path):
            open(path, "w").close()


def drop(uid: int) -> None:
    """Become ``uid`` for good (the first cell's user's); the same uid again: nothing.  A worker
    never serves two users: another uid is refused."""
    if _state["uid"] == uid:
        return
    if _state["uid"] is not None:
        raise PermissionError(f"this worker is another user's (uid {_state['uid']}), not uid {uid}'s")
    gid = _state["gid"] if _state.get("gid") is not None else uid
    home = f"/tmp/home-{uid}"
    os.makedirs(home, mode=0o700, exist_ok=True)
    os.chown(home, uid, gid)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl")
    os.environ.update(HOME=home, USER=f"user{uid}", LOGNAME=f"user{uid}")
    os.chdir(home)
    _state["uid"] = uid


def _keep(pid: int) -> None:
    """The keeper: wait for the worker, then end as it ended (in the zygote's child: never returns)."""
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda s, _f: _forward(pid, s))
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        os._exit(code if code >= 0 else 1)
    finally:
        os._exit(1)


def _forward(pid: int, sig: int) -> None:
    # PID 1 of a namespace ignores a signal it has no handler for: one to end it is SIGKILL
    os.kill(pid, signal.SIGKILL if sig in (signal.SIGTERM, signal.SIGHUP) else sig)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


if __name__ == "__main__":  # pragma: no cover - a manual check: python -m jupyter_gpu_worker.sandbox
    enter({"hide": [os.path.expanduser("~")], "keep": [sys.base_prefix, sys.prefix], "env": ["PATH"]})
    drop(65534)
    print(os.getpid(), os.getuid(), sorted(os.listdir("/proc"))[:5], os.listdir(os.path.expanduser("~") or "/"))
