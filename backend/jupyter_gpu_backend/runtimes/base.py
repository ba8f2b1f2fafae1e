"""The runtime interface: what the scheduler asks of every way of starting workers (local
processes, docker containers, ray actors), and what the three do the same way, written once.

Required (abstract): ``offers``, ``start``, ``kill``.  Written once here: ``default_gpu`` (the
first type offered), ``stop`` (wait for the exit within a grace, else kill), ``exit_cause`` (why a
worker whose connection closed is gone), ``log_tail`` (the end of its log file) and ``shutdown``
(kill every worker and wait for their exits); what differs between runtimes are small hooks
(``worker_is``, ``missing_log``, ``_kill_wait``, ``_free``, ``_exit_unknown``, ``_exited``).
Optional, with defaults that say "this runtime has nothing to add": ``max_devices`` (None: one
device a worker), ``short_of`` (None: it cannot say what a start waits for), ``waiting_for`` (""),
``wait_ready`` (ready at once), ``describe`` ({}), ``prepare`` (nothing to start).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from abc import ABC, abstractmethod
from typing import Protocol

from jupyter_gpu._wire import messages, settings
from jupyter_gpu._wire.pools import DEFAULT_IMAGE

from jupyter_gpu_backend.runtimes.images import WorkerImage, default_images


class Handle(Protocol):
    """A runtime's handle of one worker it started."""

    worker_id: str
    exited: asyncio.Future  # the exit code (< 0: a signal); ConnectionError when it cannot be known
    start_method: str  # how it was started, for the footer and the ledger ("zygote", "container"...)


def exit_text(code: int) -> str:
    """A process exit code (negative: the signal that killed it) in words."""
    if code == -signal.SIGKILL:  # not the backend's own kill (that is said as such): most often memory
        return "the process was killed by SIGKILL (the kernel's out-of-memory killer sends it, when memory runs out)"
    if code < 0:
        try:
            return f"the process was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"the process was killed by signal {-code}"
    if code == messages.EXIT_OUT_OF_MEMORY:  # the worker's own machinery hit MemoryError (agent.py)
        return f"the process ran out of memory (exited with code {code})"
    if code == messages.EXIT_WORKER_FAILED:  # its reader or main thread failed outside the cell's code
        return f"the worker's own code failed (exited with code {code}; its log says how)"
    return f"the process exited with code {code}"


async def wait_exits(handles, timeout: float = 5.0) -> None:
    """Wait (each up to ``timeout``) for the workers a runtime is shutting down to be gone."""
    for handle in list(handles):
        try:
            await asyncio.wait_for(asyncio.shield(handle.exited), timeout)
        except (asyncio.TimeoutError, ConnectionError):
            pass


def follow_root_dir():
    """Where the kernel's versions for default workers go (scheduling/follow.py), under the cache."""
    from pathlib import Path

    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root, "jupyter-gpu", "follow")


class Runtime(ABC):
    name: str  # "local", "docker", "ray": what --runtime names it
    shares_host = False  # its workers see the backend host's /dev/shm (payloads may go by shared memory)
    # its default workers get the kernel's versions of what cells use (scheduling/follow.py); local's
    # run the backend's interpreter, which an embedded backend shares with the kernel
    follows_kernel = False
    worker_is = "process"  # what a worker is, in exit_cause's words
    missing_log = ""  # what log_tail says when the worker's log file cannot be read

    def __init__(self, worker_url: str, images: dict | None = None):
        self.worker_url = worker_url  # where its workers dial out to
        self.images: dict[str, WorkerImage] = images or default_images()  # the named worker images (images.py)
        self.workers: dict[str, Handle] = {}  # worker id -> handle, until it is stopped

    # -- required ------------------------------------------------------------------------------
    @abstractmethod
    def offers(self) -> list[str]:
        """The device types a worker may be started for, "cpu" last."""

    @abstractmethod
    async def start(self, gpu: str, worker_id: str, secret: str, image: str = DEFAULT_IMAGE, *,
                    cwd: str | None = None) -> Handle:
        """Start a worker for ``gpu`` from ``image``; it dials out to ``worker_url`` and registers
        with ``worker_id`` and the one-time ``secret``.  ``cwd``: the kernel's directory of the cell
        it is started for (None: no cell, or not to be trusted), for a runtime whose workers see the
        host's files only where it mounts them (docker); the others, on the kernel's host, ignore it."""

    @abstractmethod
    def kill(self, handle: Handle) -> None:
        """End the worker now (SIGKILL), without waiting."""

    # -- written once --------------------------------------------------------------------------
    def default_gpu(self) -> str:
        return self.offers()[0]

    def claim_prestarted(self, gpu: str, image: str) -> tuple[str, str] | None:
        """(id, secret) of a worker already on its way that a start of ``gpu`` (of ``image``) is to
        take, instead of starting one: the local runtime's embedded early worker (prestart.py)."""
        return None

    async def stop(self, handle: Handle, grace: float = 2.0) -> None:
        """The worker was asked to shut down; make sure it is gone within ``grace`` seconds."""
        try:
            await asyncio.wait_for(asyncio.shield(handle.exited), grace)
        except asyncio.TimeoutError:
            self.kill(handle)
            wait = self._kill_wait(grace)
            if wait:
                with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
                    await asyncio.wait_for(asyncio.shield(handle.exited), wait)
        except ConnectionError:  # what would report its exit is gone
            self.kill(handle)
        self._free(handle)
        self.workers.pop(handle.worker_id, None)

    async def exit_cause(self, handle: Handle, timeout: float = 2.0) -> str:
        """Why a worker whose connection closed is gone, from its exit (waited up to ``timeout``)."""
        try:
            code = await asyncio.wait_for(asyncio.shield(handle.exited), timeout)
        except asyncio.TimeoutError:
            return f"its connection closed while the {self.worker_is} kept running"
        except ConnectionError as e:
            return f"its connection closed (its exit status is unknown: {self._exit_unknown(e)})"
        return self._exited(handle, code)

    def log_tail(self, handle: Handle, limit: int = 2000) -> str:
        """The end of the worker's log (``handle.log_path``), which explains a failed start."""
        try:
            with open(handle.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - limit))
                return f.read().decode(errors="replace")
        except OSError:
            return self.missing_log

    async def shutdown(self) -> None:
        """The backend is stopping: every worker killed, and waited for."""
        for handle in list(self.workers.values()):
            self.kill(handle)
        await wait_exits(self.workers.values())
        self.workers.clear()

    @staticmethod
    def passed_on() -> dict:
        """The backend's settings its workers read too ($JUPYTER_GPU_FILES, $JUPYTER_GPU_CAFILE), for a runtime whose
        workers do not inherit the backend's environment (a container, a Ray node)."""
        files, cafile = settings.FILES.get(), settings.CAFILE.get()
        return {**({settings.FILES.name: files} if files != settings.FILES.default else {}),
                **({settings.CAFILE.name: cafile} if cafile else {})}  # a TLS backend's certificate

    # -- hooks of the above --------------------------------------------------------------------
    def _kill_wait(self, grace: float) -> float:
        """How long ``stop`` waits for the exit after a kill (0: the kill is immediate)."""
        return 0.0

    def _free(self, handle: Handle) -> None:
        """Free what the runtime still holds for a stopped worker (nothing, unless it holds more
        than the process)."""

    def _exit_unknown(self, error: ConnectionError) -> str:
        """Why the exit status of a gone worker cannot be known."""
        return "the process reporting it is gone"

    def _exited(self, handle: Handle, code: int) -> str:
        """A gone worker's exit code, in words."""
        return exit_text(code)

    # -- optional ------------------------------------------------------------------------------
    def max_devices(self) -> dict[str, int] | None:
        """The most devices one worker may get, per type ("A100:2" needs two); None: one, of every type."""
        return None

    def short_of(self, gpu: str) -> str | None:
        """What a worker still starting waits for, said while it waits ("" when nothing: it is only
        booting); None: this runtime cannot say."""
        return None

    def waiting_for(self, gpu: str) -> str:
        """Why a start did not finish in time (appended to the error); "" when this runtime cannot say."""
        return ""

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` until cold starts are as fast as they get; False on timeout."""
        return True

    def describe(self) -> dict:
        """The runtime's own state, for ``GET /api/runtime``."""
        return {}

    async def build_image(self, spec: dict, say):
        """Make ``spec`` (a ``jupyter_gpu.Image``'s, ``_wire/imagespec.py``) startable: build what is
        missing (``say(text)``: its output, as it comes) and return (the WorkerImage its workers
        start from, the layer hashes built now).  ImageBuildFailed with the reason otherwise."""
        from jupyter_gpu.errors import ImageBuildFailed

        raise ImageBuildFailed(f"the {self.name} runtime cannot build a jupyter_gpu.Image yet; "
                               "the backend's named images ([images.NAME]) are what it offers")

    def isolate_users(self, users, hide=(), blank=()) -> str | None:
        """Under --users: make each user's workers out of reach of the others' and of the backend's
        state (``hide``: its directories; ``blank``: files that show empty), or say why this runtime
        cannot (then --users needs --insecure-shared-workers)."""
        return "it runs every user's workers alike, with no sandbox between them"

    def uid_for(self, user: str) -> int | None:
        """The unprivileged uid ``user``'s workers run their cells as (None: no such sandbox)."""
        return None

    async def worker_facts(self) -> dict:
        """The default worker's environment, ``{"python": "3.11", "dists": {name: version}}``
        (scheduling/follow.py): here, the backend's own interpreter, which local and ray workers run."""
        from jupyter_gpu._wire import versions
        from jupyter_gpu_backend.scheduling.follow import host_facts

        self._facts_dirs = versions.site_dirs()
        self._facts_stamp = versions.stamp(self._facts_dirs)
        return await asyncio.to_thread(host_facts)

    def facts_stale(self) -> bool:
        """Whether the default worker's environment changed since ``worker_facts`` (one stat a directory)."""
        from jupyter_gpu._wire import versions

        return versions.stamp(getattr(self, "_facts_dirs", ())) != getattr(self, "_facts_stamp", None)

    def cells_seen(self) -> None:
        """A cell began here, or a worker reported a lane cell: what ``prepare`` starts in the
        background may wait for a pause in the cells (the local runtime's zygotes do)."""

    async def prepare(self) -> None:
        """Start, in the background, what workers will need (called once the backend serves)."""
