"""Find the user's embedded backend through its runtime file, or start one (like `ray.init()`).

One embedded backend per user (per runtime dir) is shared by all of that user's kernels; a file
lock keeps two kernels starting at once from starting two.

``start_soon()`` (called as `%load_ext jupyter_gpu` begins) runs ``ensure_backend`` on a thread at
once, so the backend's process starts while the kernel still imports its side of jupyter-gpu
(~0.08 s); the connection made after that cell then waits for that start instead of beginning one.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

from jupyter_gpu.errors import AuthError, ConnectionLost
from jupyter_gpu._wire.shm import pid_alive
from jupyter_gpu._wire import settings

START_TIMEOUT = 60.0


def runtime_dir(env=None) -> str:
    """Where the embedded backend's runtime file lives, for a process of environment ``env``
    (default: this one's)."""
    d = settings.RUNTIME_DIR.get(env)
    if not d:
        from jupyter_core.paths import jupyter_runtime_dir

        d = (env or {}).get("JUPYTER_RUNTIME_DIR") or jupyter_runtime_dir()
        d = os.path.join(d, "jupyter-gpu")
    os.makedirs(d, mode=0o700, exist_ok=True)
    return d


def configured(env=None) -> tuple[str, str] | None:
    url = settings.URL.get(env)
    if url:
        return url.rstrip("/"), settings.TOKEN.get(env)
    return None


@contextmanager
def _locked(path: str):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def health(url: str, token: str, timeout: float = 2.0) -> dict:
    from jupyter_gpu._wire.wsclient import https_context  # (imports websockets: not before the start)

    req = urllib.request.Request(f"{url}/api/health", headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=https_context(url)) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            raise AuthError(f"the backend at {url} refused the token (HTTP {e.code})") from None
        raise ConnectionLost(f"the backend at {url} answered HTTP {e.code}") from None
    except (OSError, ValueError) as e:
        raise ConnectionLost(f"cannot reach the backend at {url}: {e}") from None


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# A `%gpu use URL` in the cell that loads the extension (the sidebar sends both in one request):
# that cell names its backend, so none is started for it.
_USES_ANOTHER = re.compile(r"\bgpu\b\W{0,6}use\s")


class _Soon:
    """ensure_backend() begun on a thread by start_soon(): its answer, or its error, once done."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: tuple[str, str] | None = None
        threading.Thread(target=self._run, name="jupyter-gpu-backend-start", daemon=True).start()

    def _run(self) -> None:
        try:
            self.result = _ensure()
        except Exception:
            pass  # (the connection that follows tries again, and says why it cannot)
        finally:
            self.done.set()


_soon: _Soon | None = None
_soon_lock = threading.Lock()


def start_soon(cell_code: str = "") -> None:
    """Begin finding or starting the embedded backend now, on a thread, unless a backend is
    configured or ``cell_code`` (the cell being run) names one with `%gpu use`."""
    global _soon
    if configured() or _USES_ANOTHER.search(cell_code or ""):
        return
    with _soon_lock:
        if _soon is None:
            _soon = _Soon()


def start_for_kernel(env: dict | None, python: str, cwd: str | None = None) -> tuple[str, str] | None:
    """Find or start the embedded backend of a kernel that is starting (the jupyter-gpu kernelspec's
    provisioner, on a thread): with the kernel's environment ``env``, on its interpreter ``python``,
    in its directory.  The backend's start then overlaps the kernel's own (~0.6 s here) instead of
    following its `%load_ext`, and it imports at a lower priority (``--quiet-start``, its early
    worker too), so that the kernel's start comes first; the kernel finds it through the runtime
    file (or waits on the lock while this starts it).  None when ``env`` configures a backend."""
    if configured(env):
        return None
    return _ensure(env, python, cwd, beside_kernel=True)


def ensure_backend() -> tuple[str, str]:
    """(url, token) of a running backend: the configured one, or the embedded one (started now,
    or by start_soon's thread, which is waited for)."""
    global _soon
    conf = configured()
    if conf:
        return conf
    with _soon_lock:
        soon, _soon = _soon, None
    if soon is not None:
        soon.done.wait(START_TIMEOUT + 10)  # (its own waits are bounded by START_TIMEOUT)
        if soon.result is not None:
            return soon.result
    return _ensure()


def _ensure(env: dict | None = None, python: str | None = None, cwd: str | None = None,
            beside_kernel: bool = False) -> tuple[str, str]:
    """The running embedded backend's (url, token), or one started now, with ``env``, ``python``
    and ``cwd`` (default: this process's).  ``beside_kernel``: for a kernel that is starting, so the
    backend starts quietly (``--quiet-start``: at a lower priority, backend/prestart.py) and is
    found or started without asking its /api/health: the kernel asks, and the request's imports
    (websockets, ssl: ~0.03 s of the GIL) would be taken from the process starting that kernel."""
    d = runtime_dir(env)
    info_path = os.path.join(d, "backend.json")
    with _locked(os.path.join(d, "backend.lock")):
        info = _read(info_path)
        if info and pid_alive(info.get("pid", -1)):
            if beside_kernel:
                return info["url"], info["token"]
            try:
                health(info["url"], info["token"])
                return info["url"], info["token"]
            except ConnectionLost:
                pass
        return _start(d, info_path, env, python, cwd, beside_kernel)


def _early(env=None) -> list:
    """The backend's --early-worker: a kernel starts a backend to run cells on it at once, so one worker
    of the kernel's default type starts as the backend does, beside its imports instead of after them
    (local runtime: the first cell then finds it up or nearly; JUPYTER_GPU_EARLY_WORKER=0: none)."""
    if settings.EARLY_WORKER.get(env) == "0" or (settings.RUNTIME.get(env) or "local") != "local":
        return []
    return ["--early-worker", settings.DEFAULT_GPU.get(env) or "default"]


def _start(d: str, info_path: str, env=None, python=None, cwd=None, beside_kernel=False) -> tuple[str, str]:
    try:
        os.unlink(info_path)
    except FileNotFoundError:
        pass
    log_path = os.path.join(d, "backend.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [python or sys.executable, "-m", "jupyter_gpu_backend", "--embedded", "--runtime-file", info_path,
             *_early(env), *(["--quiet-start"] if beside_kernel else [])],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives a kernel restart; exits on its own when idle
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        info = _read(info_path)
        if info and info.get("pid") == proc.pid:
            if not beside_kernel:  # (the kernel asks: _ensure)
                health(info["url"], info["token"], timeout=5)
            return info["url"], info["token"]
        if proc.poll() is not None:
            raise ConnectionLost(f"the embedded backend exited with code {proc.returncode}; see {log_path}")
        time.sleep(0.02)  # polling a file the child writes: there is no event to wait on across processes
    proc.kill()
    raise ConnectionLost(f"the embedded backend did not start within {START_TIMEOUT:.0f} s; see {log_path}")
