"""The `local` runtime: worker processes on this machine, one GPU each, or the CPU.

Workers are forked from a zygote (``jupyter_gpu_worker.zygote``) that has already imported
Python's heavy modules (IPython, numpy, torch...), so a cold start costs a fork.  While the zygote
is still importing (just after the backend started), or if it failed, a worker is spawned as a
fresh ``python -m jupyter_gpu_worker`` instead.  Each worker image (``images.py``) has its own
zygote, started with the image's interpreter and environment and having imported its ``preload``
modules, so a cold start of any image is a fork (at the price of one resident zygote per image).
A zygote whose packages changed since it started (`%pip install` in the kernel's environment, which
an embedded backend's workers share) is replaced at the next worker's start, so a new worker has
the new versions loaded (``Zygote.stale``: one stat a start).  Workers run in their own session, so a Ctrl-C
aimed at the backend's terminal never reaches user code, and their output goes to a log whose
tail explains a failed start.
"""
from __future__ import annotations

import asyncio
import glob
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass, field

from jupyter_gpu._wire.devices import gpu_type_of, split

from jupyter_gpu._wire.pools import DEFAULT_IMAGE

from jupyter_gpu_backend.prestart import (Prestarted, local_env, nvidia_device_nodes, process_env, secret_pipe,
                                         worker_command)
from jupyter_gpu_backend.private import private_file
from jupyter_gpu_backend.runtimes.images import PRELOAD_ENV, WorkerImage
from jupyter_gpu_backend.runtimes.base import Runtime
from jupyter_gpu_backend.runtimes.device_table import DeviceTable
from jupyter_gpu._wire import settings, shm

log = logging.getLogger("jupyter_gpu_backend")
# under --users: the first uid of the users' sandboxed workers (no account has it: nothing on the host is theirs)
SANDBOX_UID_BASE = 200000
SANDBOX_GID = SANDBOX_UID_BASE - 1  # their one group: the built environments' (envs.py) are readable by it
# Zygotes start once no worker has been spawned, and no cell seen (``cells_seen``), for this long (s).
# A zygote's imports (torch and the rest: ~2 s of a core here) competed with the worker spawned for
# the first cell of an embedded backend (its zygote cannot be ready by then) and with the kernel, on
# a 2-core machine; and, 1 s after the jupyter-gpu kernelspec's early worker, with the notebook's
# first cells (the matplotlib chapter: 1.35x local with it, 1.06x with no zygote, same run).  2 s:
# cells run back to back are reported ~1 s apart (the worker's METER_MAX).  Never later than
# ZYGOTE_LATEST_S after the backend began serving: a team's backend whose cells never pause (or one
# user who keeps them coming) would otherwise make every other cold start a spawn.
ZYGOTE_QUIET_S = 2.0
ZYGOTE_LATEST_S = 10.0
# what a sandboxed worker keeps of the environment besides the worker's settings and its image's env
SANDBOX_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ", "PYTHONUNBUFFERED", "PYTHONHASHSEED", "MPLBACKEND",
               "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "JUPYTER_GPU_WORKER_ID")


@dataclass
class WorkerProcess:
    worker_id: str
    gpu: str
    pid: int
    log_path: str
    device_index: int | None = None  # its first device
    exited: asyncio.Future = field(default=None)  # resolves to the exit code (< 0: a signal)
    forked: bool = False  # from the zygote (else spawned)

    @property
    def start_method(self) -> str:
        return "zygote" if self.forked else "spawn"
    device_indices: list = field(default_factory=list)  # all its devices ("A100:2": two)


def detect_gpus() -> dict[str, list[int]]:
    """GPU type -> device indices, from NVML; empty without a GPU (never a pretend GPU)."""
    if not nvidia_device_nodes():
        return {}  # NVML could find nothing: pynvml's import (~20 ms) and init are skipped
    try:
        import pynvml
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
    except Exception:
        return {}

    found: dict[str, list[int]] = {}
    try:
        for i in range(pynvml.nvmlDeviceGetCount()):
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
            name = name.decode() if isinstance(name, bytes) else name
            found.setdefault(gpu_type_of(name), []).append(i)
    finally:
        pynvml.nvmlShutdown()
    return found


class LocalRuntime(Runtime):
    name = "local"
    shares_host = True  # workers see the backend host's /dev/shm

    def __init__(self, worker_url: str, images: dict | None = None, prestarted: Prestarted | None = None):
        super().__init__(worker_url, images)
        self.gpus = detect_gpus()
        # a worker the embedded backend spawned before its imports (prestart.py), and its log directory
        self.prestarted = prestarted
        self.log_dir = prestarted.log_dir if prestarted else tempfile.mkdtemp(prefix="jupyter-gpu-workers-")
        self.table = DeviceTable(self.gpus)  # which device indices each worker gets
        use_zygotes = settings.ZYGOTE.get() != "0"
        self.zygotes = {name: Zygote(self.log_dir, image) for name, image in self.images.items()} if use_zygotes else {}
        self.zygote = self.zygotes.get(DEFAULT_IMAGE)  # the default image's
        self.retired: list = []  # zygotes replaced after their packages changed, until their workers are gone
        self.envs = None  # jupyter_gpu.Image's environments (envs.py), made on first use
        self.sandbox: dict | None = None  # under --users: the plan each worker enters (isolate_users)
        self.uids: dict[str, int] = {}  # under --users: user -> the unprivileged uid their workers run as
        self._zygotes_after: asyncio.TimerHandle | None = None  # (ZYGOTE_QUIET_S) until the zygotes start
        self._zygotes_by: float | None = None  # the loop's time they start by at the latest (ZYGOTE_LATEST_S)
        self._zygotes_started = False

    def isolate_users(self, users, hide=(), blank=()) -> str | None:
        """Under --users: every worker enters a sandbox (jupyter_gpu_worker/sandbox.py) and runs its
        first cell's user's cells as that user's own unprivileged uid (SANDBOX_UID_BASE + its place
        in the sorted users).  It needs root (namespaces, mounts, setuid): otherwise why not."""
        if os.geteuid() != 0:
            return ("its per-user sandbox needs the backend to run as root (namespaces, mounts and a uid per "
                    "user); as another user its workers would all be the backend's own user")
        from jupyter_gpu._wire import versions
        from jupyter_gpu_backend.runtimes.base import follow_root_dir
        from jupyter_gpu_backend.runtimes.envs import default_root

        self.uids = {u: SANDBOX_UID_BASE + i for i, u in enumerate(sorted(set(users)))}
        import importlib.util

        # where the worker's code is (found, not imported: the backend imports nothing of the worker)
        code = {os.path.dirname(os.path.abspath(next(iter(importlib.util.find_spec(m).submodule_search_locations))))
                for m in ("jupyter_gpu", "jupyter_gpu_worker")}
        keep = [sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable)), *versions.site_dirs(),
                *sorted(code), str(default_root()), str(follow_root_dir()),
                *(os.path.dirname(os.path.dirname(i.python)) for i in self.images.values() if i.python)]
        worker_env = [n for n, s in settings.TABLE.items()
                      if ("worker" in s.who or s.who == "all") and s not in (settings.WORKER_SECRET, settings.SANDBOX,
                                                                               settings.LANE_DIR)]
        self.sandbox = {"hide": [os.path.expanduser("~"), *hide], "keep": keep, "blank": list(blank),
                        "env": sorted({*worker_env, *SANDBOX_ENV}), "gid": SANDBOX_GID}
        if default_root().is_dir():  # environments built before: readable by the workers' group now
            from jupyter_gpu_backend.runtimes.envs import LocalEnvs

            self.envs = LocalEnvs(group=SANDBOX_GID)
        self.shares_host = False  # its /dev/shm is its own: values go on the wire
        return None

    def uid_for(self, user: str) -> int | None:
        """The uid ``user``'s sandboxed workers run as (None: no sandbox)."""
        return self.uids.get(user) if self.sandbox is not None else None

    def describe(self) -> dict:
        def state(z):
            return None if z is None else {"ready": z.ready, **{k: z.info.get(k) for k in ("preloaded", "import_s")}}

        return {
            "gpus": self.gpus,
            "zygote": state(self.zygote),
            "images": {name: {"zygote": state(self.zygotes.get(name)), "python": image.python or sys.executable}
                       for name, image in self.images.items()},
        }

    async def wait_ready(self, timeout: float) -> bool:
        """Wait (on every image's zygote's ready event) until cold starts are forks; False on timeout."""
        try:
            await asyncio.wait_for(asyncio.gather(*(z.ready_event.wait() for z in self.zygotes.values())), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def build_image(self, spec: dict, say):
        """A virtual environment per layer, made with uv (envs.py); the image gets its own zygote."""
        if self.envs is None:
            from jupyter_gpu_backend.runtimes.envs import LocalEnvs

            self.envs = LocalEnvs(group=SANDBOX_GID if self.sandbox is not None else None)
        built = self.envs.ready(spec) or await self.envs.build(spec, say)
        if built.sites is not None and not built.shadows:
            # it only adds packages to the default environment: its workers are forks of the default
            # zygote with its own site-packages first (a cold start as fast as the default's)
            image = WorkerImage(spec["name"], {**built.env, settings.IMAGE_SITES.name: os.pathsep.join(built.sites)},
                                fork_from=DEFAULT_IMAGE)
            self.images[image.name] = image
            return image, built.built
        image = WorkerImage(spec["name"], dict(built.env), (), built.python)
        self.images[image.name] = image
        if self.zygotes and image.name not in self.zygotes:  # cold starts of it are forks too
            self.zygotes[image.name] = Zygote(self.log_dir, image)
            self.zygotes[image.name].start()
        return image, built.built

    async def prepare(self) -> None:
        """Start the zygotes in the background (the backend calls this once it serves), once no
        worker has been spawned, and no cell seen, for ZYGOTE_QUIET_S (by ZYGOTE_LATEST_S at the latest)."""
        self._zygotes_by = asyncio.get_running_loop().time() + ZYGOTE_LATEST_S
        self._start_zygotes_later()

    def cells_seen(self) -> None:
        self._start_zygotes_later()  # (a pause in the cells, not their first seconds)

    def _start_zygotes_later(self) -> None:
        if self._zygotes_started or not self.zygotes:
            return
        if self._zygotes_after is not None:
            self._zygotes_after.cancel()
        loop = asyncio.get_running_loop()
        when = loop.time() + ZYGOTE_QUIET_S
        if self._zygotes_by is not None:
            when = min(when, self._zygotes_by)
        self._zygotes_after = loop.call_at(when, self._start_zygotes)

    def _start_zygotes(self) -> None:
        self._zygotes_started = True
        for z in self.zygotes.values():
            z.start()

    def offers(self) -> list[str]:
        return sorted(self.gpus) + ["cpu"]

    def max_devices(self) -> dict[str, int]:
        """The most devices a worker may get per type ("A100:2" needs two A100s here)."""
        return self.table.most()

    def claim_prestarted(self, gpu: str, image: str) -> tuple[str, str] | None:
        """(id, secret) of the worker spawned before the backend's imports, once, for the start of a
        default-image ``gpu`` worker it fits (a cpu worker with the environment it was given)."""
        p = self.prestarted
        if (p is None or p.claimed or gpu != p.gpu or image != DEFAULT_IMAGE or self.sandbox is not None
                or self.images[DEFAULT_IMAGE].worker_env()):
            return None
        p.claimed = True
        return p.worker_id, p.secret

    async def start(self, gpu: str, worker_id: str, secret: str, image: str = DEFAULT_IMAGE, *,
                    cwd: str | None = None) -> WorkerProcess:  # cwd: this host's, seen as it is
        name, count = split(gpu)  # "A100:2": a worker with two A100s
        indices = self.table.assign(name, count)  # NoSuchDevice, with the reason, when there are fewer
        try:
            handle = await self._start(gpu, worker_id, secret, indices, self.images[image])
        except BaseException:
            self.table.release(indices)
            raise
        handle.device_indices = indices
        handle.exited.add_done_callback(lambda _: self.table.release(indices))  # its devices are free again
        # what it could not remove itself (killed: SIGKILL, OOM, a segfault), off the event loop
        handle.exited.add_done_callback(
            lambda _: threading.Thread(target=self._leftovers, args=(worker_id,), daemon=True).start())
        handle.exited.add_done_callback(lambda _: self._segments_left(handle.pid))  # (a listdir: on the loop)
        return handle

    async def _start(self, gpu: str, worker_id: str, secret: str, indices: list, image: WorkerImage) -> WorkerProcess:
        index = indices[0] if indices else None
        p = self.prestarted
        if p is not None and p.claimed and p.worker_id == worker_id:  # (claim_prestarted): spawned already
            self.prestarted = None
            handle = WorkerProcess(worker_id, gpu, p.proc.pid, p.log_path, index, p.exited(asyncio.get_running_loop()))
            self.workers[worker_id] = handle
            self._start_zygotes_later()  # (as after any spawn)
            return handle
        # a cpu worker sees no GPU at all; a GPU worker sees exactly its own (one or several); its
        # direct lane socket lives in the private (0700) log directory, unless it is sandboxed
        env = local_env(image.worker_env(), DeviceTable.visible(indices), self.log_dir if self.sandbox is None else None)
        log_path = os.path.join(self.log_dir, f"{worker_id}.log")
        # (and the variables its image sets: the rest of the backend's environment is not the worker's)
        sandbox = None if self.sandbox is None else {
            **self.sandbox, "env": sorted({*self.sandbox["env"], *env}),
            "keep": [*self.sandbox["keep"], *filter(None, [os.environ.get(settings.CAFILE.name)])]}  # TLS: the CA
        handle = None
        zygote_of = image.fork_from or image.name  # (a built image that only adds packages: the default's)
        zygote = self.zygotes.get(zygote_of)
        if zygote is not None and zygote.ready and zygote.stale():
            zygote = self._renew(zygote_of)  # not ready yet: this worker is spawned, with the new packages
        if zygote is not None and zygote.ready:
            try:
                pid, exited = await zygote.fork(worker_id, self.worker_url, secret, env, log_path, sandbox)
                handle = WorkerProcess(worker_id, gpu, pid, log_path, index, exited, forked=True)
            except (OSError, asyncio.TimeoutError, ConnectionError) as e:
                log.warning("zygote fork failed (%s): spawning %s instead", e, worker_id)
        if handle is None:
            handle = await self._spawn(gpu, worker_id, secret, env, log_path, index, image.python, sandbox)
            self._start_zygotes_later()  # (not yet started: after this worker's imports, not during)
        self.workers[worker_id] = handle
        return handle

    def _renew(self, name: str) -> "Zygote":
        """A new zygote for image ``name``, whose packages changed since its zygote imported them (a
        `%pip install` in the kernel's environment): its forks would have the old modules loaded.
        The old one lives on, unready, until the workers it forked are gone (only it sees them exit)."""
        old = self.zygotes[name]
        log.info("the packages of image %s changed since its zygote started: starting a new zygote", name)
        new = self.zygotes[name] = Zygote(self.log_dir, old.image)
        if name == DEFAULT_IMAGE:
            self.zygote = new
        new.start()
        old.retire()
        self.retired.append(old)
        return new

    async def _spawn(self, gpu, worker_id, secret, env, log_path, index, python=None, sandbox=None) -> WorkerProcess:
        read_fd = secret_pipe(secret)
        full_env = process_env(env, worker_id, read_fd, None if sandbox is None else json.dumps(sandbox))
        try:
            with private_file(log_path, "wb") as out:  # what its cells print: the backend user's alone
                proc = await asyncio.create_subprocess_exec(
                    *worker_command(python, self.worker_url),
                    env=full_env, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                    stderr=asyncio.subprocess.STDOUT, start_new_session=True, pass_fds=(read_fd,),
                )
        finally:
            os.close(read_fd)
        return WorkerProcess(worker_id, gpu, proc.pid, log_path, index, asyncio.ensure_future(proc.wait()))

    @staticmethod
    def _leftovers(worker_id: str) -> None:
        """What a worker that could not clean up (killed) left in this host's temp directory: its
        mirrors of kernels' synced directories (jupyter_gpu_worker/mirror.py)."""
        for path in glob.glob(os.path.join(tempfile.gettempdir(), f"jupyter-gpu-files-{glob.escape(worker_id)}-*")):
            shutil.rmtree(path, ignore_errors=True)

    @staticmethod
    def _segments_left(pid: int) -> None:
        """The /dev/shm segments of a worker that could not unlink them (killed: the stop button's
        second press, SIGKILL, OOM): its results lent to kernels, named after its pid (shm.py).  A
        kernel mapping one keeps its memory; the name goes now, not at whichever process's next
        sweep on this host (the memory stayed taken until then)."""
        for path in glob.glob(os.path.join(shm.SHM_DIR, f"{glob.escape(shm.PREFIX)}{pid}-*")):
            try:
                os.unlink(path)
            except OSError:
                pass

    def _free(self, handle: WorkerProcess) -> None:
        """A stopped worker's empty log explains nothing: it goes (else a long-running backend piles
        up one file per worker it ever started); one with something in it stays, for a person, until
        the backend's shutdown."""
        try:
            if os.path.getsize(handle.log_path) == 0:
                os.unlink(handle.log_path)
        except OSError:
            pass

    def kill(self, handle: WorkerProcess) -> None:
        if not handle.exited.done():
            try:
                os.killpg(handle.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    async def shutdown(self) -> None:
        if self._zygotes_after is not None:
            self._zygotes_after.cancel()
        await super().shutdown()
        for z in [*self.zygotes.values(), *self.retired]:
            await z.stop()
        # its workers' and zygotes' logs and lane sockets: nobody reads them once the backend is gone
        # (left, one directory per backend run piled up in the temp directory)
        shutil.rmtree(self.log_dir, ignore_errors=True)


class Zygote:
    """The zygote process and its line protocol (see ``jupyter_gpu_worker.zygote``)."""

    def __init__(self, log_dir: str, image: WorkerImage | None = None):
        self.image = image or WorkerImage()
        name = self.image.name
        self.log_path = os.path.join(log_dir, "zygote.log" if name == DEFAULT_IMAGE else f"zygote-{name}.log")
        self.proc: asyncio.subprocess.Process | None = None
        self.ready = False
        self.info: dict = {}
        self._forks: dict[str, asyncio.Future] = {}
        self._exits: dict[int, asyncio.Future] = {}
        self._task: asyncio.Task | None = None
        self.ready_event = asyncio.Event()
        self.retiring = False  # replaced: it forks no more, and exits once its last worker has

    def stale(self) -> bool:
        """Whether its packages' directories changed since it started (something installed, upgraded
        or removed there): one stat each (~1 us), on a worker's start only."""
        for path, before in (self.info.get("site") or {}).items():
            try:
                now = os.stat(path).st_mtime_ns
            except OSError:
                now = -1
            if now != before:
                return True
        return False

    def retire(self) -> None:
        self.ready, self.retiring = False, True
        self._close_when_idle()

    def _close_when_idle(self) -> None:
        """A retiring zygote with no live worker: closing its stdin ends it."""
        if self.retiring and not self._exits and not self._forks and self.proc is not None and self.proc.returncode is None:
            try:
                self.proc.stdin.close()
            except (OSError, RuntimeError):
                pass

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        # the image's env is the zygote's own, so its preload imports see it too (and its children inherit it)
        env = {**os.environ, **self.image.worker_env(), "PYTHONUNBUFFERED": "1"}
        if not self.image.preload:
            env.pop(PRELOAD_ENV, None)
        with private_file(self.log_path, "ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                self.image.python or sys.executable, "-m", "jupyter_gpu_worker.zygote",
                env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err,
                start_new_session=True,
            )
        loop = asyncio.get_running_loop()
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            msg = json.loads(line)
            if msg.get("ready"):
                self.info, self.ready = msg, True
                self.ready_event.set()
                log.info("zygote of image %s ready in %.2f s with %s", self.image.name, msg["import_s"],
                         ", ".join(msg["preloaded"]))
            elif "forked" in msg:
                self._exits[msg["pid"]] = loop.create_future()
                fut = self._forks.pop(msg["forked"], None)
                if fut is not None and not fut.done():
                    fut.set_result(msg["pid"])
            elif "exited" in msg:
                fut = self._exits.pop(msg["exited"], None)
                if fut is not None and not fut.done():
                    fut.set_result(msg["code"])
                self._close_when_idle()
        self.ready = False  # the zygote died: workers are spawned from now on
        for fut in list(self._forks.values()) + list(self._exits.values()):
            if not fut.done():  # its children keep running, but their exit can no longer be seen
                fut.set_exception(ConnectionError("the zygote exited"))

    async def fork(self, worker_id: str, url: str, secret: str, env: dict, log_path: str, sandbox: dict | None = None):
        fut = asyncio.get_running_loop().create_future()
        self._forks[worker_id] = fut
        req = {"worker": worker_id, "url": url, "secret": secret, "env": env, "log": log_path, "sandbox": sandbox}
        self.proc.stdin.write((json.dumps(req) + "\n").encode())
        await self.proc.stdin.drain()
        pid = await asyncio.wait_for(fut, 10)
        return pid, self._exits[pid]

    async def stop(self) -> None:
        if self.proc is None and self._task is not None and not self._task.done():
            self._task.cancel()  # still being started (asyncio kills a process it was starting)
            await asyncio.gather(self._task, return_exceptions=True)
        if self.proc is not None and self.proc.returncode is None:
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except asyncio.TimeoutError:
                self.proc.kill()
