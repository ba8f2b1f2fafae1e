"""The `docker` runtime: each worker is a container of the worker image on this host's Docker Engine.

The container runs the ordinary agent (``python -m jupyter_gpu_worker --url ...``), which dials out
to the backend like every worker.  Host networking, because a container reaches the backend on the
host's 127.0.0.1 only that way (and a GPU node needs no inbound port).  ``init=True``: a small init
is PID 1, so the agent keeps normal signal handling (SIGINT for the stop button) and a stop never
waits out Docker's 10 s SIGTERM timeout.  A GPU worker gets exactly one GPU by a device request (the
NVIDIA container toolkit); a ``cpu`` worker gets none and says ``cpu``: nothing pretends.  The
directory of the cell whose cold start creates a container, and the config's ``docker_mounts``, are
bind-mounted into it at the same path, and its code runs as their owner (``docker_mounts.py``).

The image is ``docker_image.ensure_worker_image`` (built in the background when the backend starts,
only when its inputs changed), or ``$JUPYTER_GPU_DOCKER_IMAGE`` as given.  A named worker image
(``images.py``) with a ``base`` gets the same build on that base (its tag is the content hash, so
two images on one base share it); its ``env`` and ``preload`` go into the container's environment.  A
``jupyter_gpu.Image`` is built into a stack of layer images (``docker_envs.py``) on the worker image
(``kernel``) or on one built on its own base; its containers run its last layer.  Every container carries
this backend's label; a thread per container waits for its exit, keeps its exit status, OOM flag and
log tail, and removes it, so dead workers do not pile up; ``shutdown`` removes whatever is left.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import threading
from dataclasses import dataclass, field

from jupyter_gpu.errors import WorkerStartFailed
from jupyter_gpu._wire.shm import pid_alive

from jupyter_gpu._wire.pools import DEFAULT_IMAGE

from jupyter_gpu_backend.runtimes import docker_mounts
from jupyter_gpu_backend.runtimes.base import Runtime, exit_text, follow_root_dir, wait_exits
from jupyter_gpu_backend.runtimes.local import detect_gpus
from jupyter_gpu._wire import settings

log = logging.getLogger("jupyter_gpu_backend")
SOCKET_DIR = "/run/jupyter-gpu"  # where a worker without network finds the backend's socket (isolate_users)

RUNTIME_LABEL = "org.jupyter-gpu.runtime"  # = "docker" on every worker container
BACKEND_LABEL = "org.jupyter-gpu.backend"  # host:pid:nonce of the backend that owns it
WORKER_LABEL = "org.jupyter-gpu.worker"


@dataclass
class DockerWorker:
    worker_id: str
    gpu: str
    name: str
    container: object = None
    device_index: int | None = None
    exited: asyncio.Future = field(default=None)  # resolves to the exit code (< 0: a signal)
    oom: bool = False
    log_text: str | None = None  # the log's tail, kept when the container is removed
    start_method: str = "container"


def container_code(code: int) -> int:
    """A container's exit status as a process exit code: the init exits 128+N for signal N."""
    return -(code - 128) if 128 < code <= 128 + 64 else code


class DockerRuntime(Runtime):
    name = "docker"
    shares_host = False  # a container has its own /dev/shm: payloads go on the wire
    follows_kernel = True  # scheduling/follow.py
    worker_is = "container"

    def __init__(self, worker_url: str, image: str | None = None, images: dict | None = None, mounts=()):
        super().__init__(worker_url, images)
        self.mounts = list(mounts)  # config `docker_mounts`: host directories every container sees (docker_mounts.py)
        import docker

        self.docker = docker
        try:
            # a pool as large as the number of containers waited on at once
            self.client = docker.from_env(max_pool_size=256)
            self.client.ping()
        except Exception as e:
            raise RuntimeError(f"the docker runtime needs a Docker Engine, and none answers: {e}") from None
        self.gpus = detect_gpus()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.image = image or settings.DOCKER_IMAGE.get() or None
        self._given_image = self.image is not None  # used as it is, never built
        self.shm_size = settings.DOCKER_SHM.get()  # Docker's 64 MiB breaks DataLoaders
        self._image_task: asyncio.Future | None = None
        self._image_error: str | None = None
        # named images with their own base: base -> its build (the default base's is _image_task)
        self._builds: dict[str, asyncio.Future] = {}
        self._build_errors: dict[str, str] = {}
        self._next_index: dict[str, int] = {}
        self.envs = None  # jupyter_gpu.Image's layer images (docker_envs.py), made on first use
        self._specs: dict[str, dict] = {}  # a built Image's name -> its spec (built again if its image went)
        self.isolated = False  # under --users: containers without network (isolate_users)
        self.worker_socket: str | None = None  # then: the backend's Unix socket for workers (server.py)
        self._remove_orphans()

    # -- the image -------------------------------------------------------------------------------
    async def prepare(self) -> None:
        """Start making sure the worker images exist (the backend calls this once it serves)."""
        if self._image_task is None:
            self._image_task = asyncio.ensure_future(self._ensure_image())
            # its failure is logged and told to each cell; never "exception was never retrieved"
            self._image_task.add_done_callback(lambda t: t.cancelled() or t.exception())
        for base in {i.base for i in self.images.values() if i.base}:
            if base not in self._builds:
                self._builds[base] = task = asyncio.ensure_future(self._ensure_based(base))
                task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _ensure_based(self, base: str) -> str:
        """The worker image built on a named image's ``base`` (no pull: the base must be here)."""
        from jupyter_gpu_backend.runtimes.docker_image import ensure_worker_image

        try:
            tag, _ = await asyncio.get_running_loop().run_in_executor(None, ensure_worker_image, self.client, base, log.info)
        except Exception as e:
            self._build_errors[base] = f"{type(e).__name__}: {e}"
            log.error("no worker image on base %s: %s", base, self._build_errors[base])
            raise
        return tag

    async def _ensure_image(self) -> str:
        if self.image:
            return self.image
        from jupyter_gpu_backend.runtimes.docker_image import ensure_worker_image

        loop = asyncio.get_running_loop()
        try:
            tag, built = await loop.run_in_executor(None, ensure_worker_image, self.client, None, log.info)
        except Exception as e:
            self._image_error = f"{type(e).__name__}: {e}"
            log.error("the docker runtime has no worker image: %s", self._image_error)
            raise
        self.image = tag
        return tag

    async def build_image(self, spec: dict, say):
        """A jupyter_gpu.Image as a stack of layer images on its root worker image (docker_envs.py):
        built where a layer's tag is missing, its output streamed to ``say``."""
        from jupyter_gpu.errors import ImageBuildFailed
        from jupyter_gpu._wire import imagespec
        from jupyter_gpu_backend.runtimes.docker_envs import DockerEnvs
        from jupyter_gpu_backend.runtimes.images import WorkerImage

        reason = imagespec.refused_by(spec, self.name)
        if reason:
            raise ImageBuildFailed(reason)
        if self.envs is None:
            self.envs = DockerEnvs(self.client)
        built = []
        if spec["base"]["kind"] == "kernel":  # what default workers run
            try:
                root = await self._current_image()
            except WorkerStartFailed as e:
                raise ImageBuildFailed(str(e)) from None
        else:
            root, made = await self.envs.root(spec["base"], spec["hashes"][0], say)
            built += spec["hashes"][:1] if made else []
        tag, layers = await self.envs.build(spec, root, say)
        image = WorkerImage(spec["name"], docker_tag=tag)
        self.images[image.name] = image
        self._specs[image.name] = spec
        return image, built + layers

    def isolate_users(self, users, hide=(), blank=()) -> str | None:
        """A container has its own processes, mounts and /dev/shm already; under --users it has no
        network either (``network_mode="none"``): its worker dials the backend through a Unix socket
        mounted into it (``worker_socket``, made by the server), and a cell reaches nothing else."""
        self.isolated = True
        return None

    async def worker_facts(self) -> dict:
        """The default worker image's Python and installed versions (scheduling/follow.py), asked
        of the image once (a container that prints them)."""
        from jupyter_gpu_backend.runtimes.docker_envs import DockerEnvs

        if self.envs is None:
            self.envs = DockerEnvs(self.client)
        spec = self.images[DEFAULT_IMAGE]
        tag = spec.docker_tag or await self._current_image(spec.base)
        facts = await asyncio.get_running_loop().run_in_executor(None, self.envs.facts, tag)
        self._facts_tag = tag
        return facts

    def facts_stale(self) -> bool:
        """Whether the default worker image is another since ``worker_facts`` (its worker was rebuilt)."""
        task = self._image_task
        current = task.result() if task is not None and task.done() and not task.cancelled() and \
            task.exception() is None else None
        return current is not None and current != getattr(self, "_facts_tag", None)

    async def wait_ready(self, timeout: float) -> bool:
        await self.prepare()
        try:
            await asyncio.wait_for(asyncio.gather(*map(asyncio.shield, [self._image_task, *self._builds.values()])), timeout)
            return True
        except Exception:
            return False

    def describe(self) -> dict:
        ready = self._image_task is not None and self._image_task.done() and self._image_error is None
        based = {b: t.result() if t.done() and not t.cancelled() and t.exception() is None else None
                 for b, t in self._builds.items()}
        return {"gpus": self.gpus, "image": self.image, "image_ready": ready, "image_error": self._image_error,
                "mounts": self.mounts,
                "images": {n: {"base": i.base, "tag": i.docker_tag or (based.get(i.base) if i.base else self.image),
                               "error": self._build_errors.get(i.base) if i.base else self._image_error}
                           for n, i in self.images.items()}}

    # -- devices -------------------------------------------------------------------------------
    def offers(self) -> list[str]:
        return sorted(self.gpus) + ["cpu"]

    def _pick_index(self, gpu: str) -> int | None:
        indices = self.gpus.get(gpu)
        if not indices:
            return None
        i = self._next_index.get(gpu, 0)
        self._next_index[gpu] = i + 1
        return indices[i % len(indices)]

    # -- workers -------------------------------------------------------------------------------
    async def _current_image(self, base: str | None = None) -> str:
        if base is not None:  # a named image's own base
            if base in self._build_errors:  # try again: the base may have been loaded since
                self._builds.pop(base, None)
                self._build_errors.pop(base, None)
            await self.prepare()
            try:
                return await asyncio.shield(self._builds[base])
            except Exception:
                raise WorkerStartFailed(f"no worker image on base {base}: {self._build_errors.get(base)}") from None
        if self._image_error is not None:  # try again: a missing base or a network blip may be gone
            self._image_task, self._image_error = None, None
        await self.prepare()
        try:
            return await asyncio.shield(self._image_task)
        except Exception:
            raise WorkerStartFailed(f"no worker image for the docker runtime: {self._image_error}") from None

    async def start(self, gpu: str, worker_id: str, secret: str, image_name: str = DEFAULT_IMAGE, *,
                    cwd: str | None = None) -> DockerWorker:
        spec = self.images[image_name]
        image = spec.docker_tag or await self._current_image(spec.base)
        index = self._pick_index(gpu)
        # the cell's directory and `docker_mounts`, bind-mounted at the same path; run as their owner
        mounts = docker_mounts.plan(cwd, self.mounts)
        for path, why in mounts.refused.items():
            log.info("worker %s: %s is not mounted: %s", worker_id, path, why)
        env = {**self.passed_on(), **spec.worker_env(), **mounts.env, settings.WORKER_ID.name: worker_id,
               settings.WORKER_SECRET_FD.name: "0"}  # the secret comes on its stdin (create_and_start), not here
        opts = mounts.create_options()
        network = "host"
        if self.isolated:  # no network: the backend through its socket, mounted read-only, and nothing else
            network = "none"
            opts.setdefault("volumes", {})[os.path.dirname(self.worker_socket)] = {"bind": SOCKET_DIR, "mode": "ro"}
            env[settings.WORKER_SOCKET.name] = f"{SOCKET_DIR}/{os.path.basename(self.worker_socket)}"
        cafile = os.environ.get(settings.CAFILE.name)
        if cafile:  # a TLS backend: its workers verify its certificate against this file
            opts.setdefault("volumes", {})[cafile] = {"bind": cafile, "mode": "ro"}
            env[settings.CAFILE.name] = cafile
        # the kernel's versions of what its cells use, which the image lacks (follow.py): read-only
        follow_root = str(follow_root_dir())
        os.makedirs(follow_root, mode=0o755, exist_ok=True)
        opts.setdefault("volumes", {})[follow_root] = {"bind": follow_root, "mode": "ro"}
        if index is None:
            env["CUDA_VISIBLE_DEVICES"] = ""  # a cpu worker sees no GPU at all
        else:  # exactly its own GPU, which is device 0 inside the container
            env["NVIDIA_DRIVER_CAPABILITIES"] = "compute,utility"  # CUDA and NVML, whatever the base says
            opts["device_requests"] = [self.docker.types.DeviceRequest(device_ids=[str(index)], capabilities=[["gpu"]])]
        handle = DockerWorker(worker_id, gpu, f"jupyter-gpu-{worker_id}", device_index=index)
        loop = asyncio.get_running_loop()
        handle.exited = loop.create_future()

        def create_and_start():
            c = self.client.containers.create(
                image, ["python", "-m", "jupyter_gpu_worker", "--url", self.worker_url],
                name=handle.name, environment=env, network_mode=network, init=True, shm_size=self.shm_size,
                labels={RUNTIME_LABEL: "docker", BACKEND_LABEL: self.owner, WORKER_LABEL: worker_id},
                stdin_open=True, **opts,
            )
            try:
                # the one-time secret on the worker's stdin, never its environment (`docker inspect`
                # and /proc/1/environ show that): attached before the start, so none of it is missed
                stdin = c.attach_socket(params={"stdin": 1, "stream": 1})
                c.start()
                raw = getattr(stdin, "_sock", stdin)
                raw.sendall(secret.encode() + b"\n")
                stdin.close()
            except Exception:
                c.remove(force=True)
                raise
            return c

        try:
            try:
                handle.container = await loop.run_in_executor(None, create_and_start)
            except self.docker.errors.ImageNotFound:
                if self._given_image and not spec.base and not spec.docker_tag:
                    raise
                # pruned by a newer build of another backend: build ours again, once
                if spec.docker_tag:  # a jupyter_gpu.Image's: its layers again (the log says so)
                    spec, _ = await self.build_image(self._specs[image_name], lambda text: log.info(text.rstrip()))
                    image = spec.docker_tag
                else:
                    if spec.base:
                        self._builds.pop(spec.base, None)
                    else:
                        self.image, self._image_task = None, None
                    image = await self._current_image(spec.base)
                handle.container = await loop.run_in_executor(None, create_and_start)
        except self.docker.errors.DockerException as e:
            raise WorkerStartFailed(f"docker could not start a {gpu} worker container: {e}") from None
        self.workers[worker_id] = handle
        threading.Thread(target=self._wait, args=(handle, loop), name=f"wait-{worker_id}", daemon=True).start()
        return handle

    def _wait(self, handle: DockerWorker, loop: asyncio.AbstractEventLoop) -> None:
        """The container's exit, in its own thread (Docker's wait blocks): keep what explains it, remove it."""
        c = handle.container
        try:
            code = container_code(int(c.wait(timeout=None)["StatusCode"]))
        except Exception as e:  # the engine went away: the exit status cannot be known
            result = (None, ConnectionError(f"docker: {e}"))
        else:
            result = (code, None)
            try:
                c.reload()
                handle.oom = bool(c.attrs["State"].get("OOMKilled"))
                handle.log_text = c.logs(tail=200).decode(errors="replace")
                c.remove(force=True)
            except self.docker.errors.DockerException:
                pass  # removed already (shutdown)

        def resolve():
            if not handle.exited.done():
                if result[1] is None:
                    handle.exited.set_result(result[0])
                else:
                    handle.exited.set_exception(result[1])

        if not loop.is_closed():
            loop.call_soon_threadsafe(resolve)

    def kill(self, handle: DockerWorker) -> None:
        if handle.exited.done() or handle.container is None:
            return

        def kill():
            try:
                handle.container.kill()  # SIGKILL to the init: the whole container goes
            except self.docker.errors.DockerException:
                pass  # already gone

        asyncio.get_running_loop().run_in_executor(None, kill)

    def _kill_wait(self, grace: float) -> float:
        return 10  # the engine kills the container, then its wait thread reports the exit

    def _exit_unknown(self, error: ConnectionError) -> str:
        return str(error)

    def _exited(self, handle: DockerWorker, code: int) -> str:
        if handle.oom:
            return f"the container ran out of memory (killed by the OOM killer; {exit_text(code)})"
        return exit_text(code)

    def log_tail(self, handle: DockerWorker, limit: int = 2000) -> str:
        """The container's log (kept when it was removed), not a file."""
        text = handle.log_text
        if text is None and handle.container is not None:
            try:
                text = handle.container.logs(tail=200).decode(errors="replace")
            except self.docker.errors.DockerException:
                text = ""
        return (text or "")[-limit:]

    # -- clean-up --------------------------------------------------------------------------------
    def _containers(self, **labels):
        filters = {"label": [f"{k}={v}" for k, v in {RUNTIME_LABEL: "docker", **labels}.items()]}
        return self.client.containers.list(all=True, filters=filters)

    def _remove_orphans(self) -> None:
        """Containers left by a backend of this host that died without cleaning up."""
        host = socket.gethostname()
        for c in self._containers():
            owner = c.labels.get(BACKEND_LABEL, "").split(":")
            if len(owner) == 3 and owner[0] == host and owner[1].isdigit() and not pid_alive(int(owner[1])):
                log.info("removing container %s of a backend that is gone", c.name)
                try:
                    c.remove(force=True)
                except self.docker.errors.DockerException:
                    pass

    async def shutdown(self) -> None:
        """Every container of this backend removed (one still starting too) and waited for."""
        loop = asyncio.get_running_loop()

        def remove_all():
            for c in self._containers(**{BACKEND_LABEL: self.owner}):
                try:
                    c.remove(force=True)
                except self.docker.errors.DockerException:
                    pass

        await loop.run_in_executor(None, remove_all)
        await wait_exits(self.workers.values())
        self.workers.clear()
        for task in [self._image_task, *self._builds.values()]:
            if task is not None and not task.done():
                task.cancel()  # the build itself finishes in its thread; nothing waits for it

