"""The `ray` runtime: each worker is a Ray actor that holds its resources (``num_gpus``) on some node
of an existing Ray cluster (``ray://`` address, or a local ``ray.init()``), and runs the ordinary
worker agent as its child process.

Why a child process and not the agent inside the actor: user code needs a main thread of its own
and SIGINT for the stop button, which Ray's task loop keeps for itself.  The child inherits the
``CUDA_VISIBLE_DEVICES`` Ray assigned to the actor, dials out to the backend like any worker, and
its exit is reported by the actor's ``wait()``.  Ray's autoscaler adds nodes when actors wait for
resources: this is how a team outgrows one machine, with no home-made distribution.

A named worker image (``images.py``) gives the actor its ``runtime_env`` (Ray's own way to ship a
pip list, a working dir or env vars to whichever node runs it) and the worker its ``env`` and
``preload``.  A ``jupyter_gpu.Image`` (only ``from_kernel`` with ``pip_install`` and ``env``:
``imagespec.RUNTIMES``) is a ``runtime_env`` too, ``{"pip": [...], "env_vars": {...}}``: Ray makes
the environment on the node, over the one its workers run (``build_image`` says how and when).
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import sys
from dataclasses import dataclass, field

from jupyter_gpu._wire.pools import DEFAULT_IMAGE
from jupyter_gpu.errors import ImageBuildFailed, WorkerStartFailed

from jupyter_gpu_backend.runtimes.base import Runtime
from jupyter_gpu._wire import settings

log = logging.getLogger("jupyter_gpu_backend")
ACTOR_CPUS = 0.5  # what an actor holds besides its GPU: the agent is mostly idle between cells
_RAY_LOG_PREFIX = re.compile(r"^\S+ \S+\s+\w+ \S+:\d+ -- ")  # "2026-12-06 15:30:40,056\tINFO pip.py:292 -- "


@dataclass
class RayWorker:
    worker_id: str
    gpu: str
    actor: object
    pid: int
    log_path: str
    exited: asyncio.Future = field(default=None)
    start_method: str = "ray actor"  # the agent runs as the actor's child process


def _actor_class(ray):
    # two threads: `wait()` blocks one for the child's whole life, so `signal()` (the kill of a
    # second stop-button press, of a stop past its grace) needs the other, or it never runs
    @ray.remote(max_restarts=0, max_concurrency=2)
    class WorkerActor:
        """Holds the resources; runs `python -m jupyter_gpu_worker` as its child."""

        def start(self, url: str, env: dict, log_path: str, secret: str) -> int:
            import subprocess

            # the one-time secret by an inherited pipe, never the child's environment (/proc shows that)
            read_fd, write_fd = os.pipe()
            os.write(write_fd, secret.encode() + b"\n")
            os.close(write_fd)
            full_env = {**os.environ, **env, settings.WORKER_SECRET_FD.name: str(read_fd)}
            try:
                with open(log_path, "ab") as out:
                    self.proc = subprocess.Popen(
                        [sys.executable, "-m", "jupyter_gpu_worker", "--url", url],
                        env=full_env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                        start_new_session=True, pass_fds=(read_fd,),
                    )
            finally:
                os.close(read_fd)
            return self.proc.pid

        def wait(self) -> int:
            return self.proc.wait()

        def signal(self, sig: int) -> None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    return WorkerActor


class RayRuntime(Runtime):
    name = "ray"
    shares_host = False  # actors may live on other nodes: payloads go on the wire
    follows_kernel = True  # scheduling/follow.py
    missing_log = "(the log is on the node that ran the actor)"

    def __init__(self, worker_url: str, address: str | None = None, images: dict | None = None):
        super().__init__(worker_url, images)
        import ray

        self.ray = ray
        if not ray.is_initialized():
            address = address or settings.RAY_ADDRESS.get() or None
            # a local cluster's size: every CPU, at least 2 ($JUPYTER_GPU_RAY_CPUS to choose)
            cpus = int(settings.RAY_CPUS.get() or max(2, os.cpu_count() or 2))
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     **({} if address else {"num_cpus": cpus}))
        self.actor_cls = _actor_class(ray)
        self.log_dir = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"jupyter-gpu-ray-{os.getpid()}")
        os.makedirs(self.log_dir, exist_ok=True)

    def offers(self) -> list[str]:
        resources = self.ray.cluster_resources()
        # Ray names a node's GPU model as an "accelerator_type:<model>" resource
        types = sorted(k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:"))
        return types + ["cpu"]

    @staticmethod
    def _needs(gpu: str) -> dict:
        return {"CPU": ACTOR_CPUS, **({"GPU": 1} if gpu != "cpu" else {})}

    def _room(self, gpu: str) -> tuple[dict, dict] | None:
        """(what a worker's actor needs, what the cluster has free of it); None if Ray cannot say."""
        try:
            free = self.ray.available_resources()
        except Exception:
            return None
        need = self._needs(gpu)
        return need, {k: free.get(k, 0.0) for k in need}

    def waiting_for(self, gpu: str) -> str:
        """Why a worker may not have started: what its actor needs against what the cluster has free."""
        room = self._room(gpu)
        if room is None:
            return ""
        return (f": Ray has not placed its actor, which needs {_resources(room[0])}; free in the cluster now: "
                f"{_resources(room[1])} (its autoscaler, if any, may add a node)")

    def short_of(self, gpu: str) -> str:
        """What a worker still starting waits for, said while it waits; "" when the cluster has
        the room its actor needs free (then it is only booting)."""
        room = self._room(gpu)
        short = {k: v for k, v in room[1].items() if v < room[0][k]} if room else {}
        if not short:
            return ""
        return (f"waiting for Ray to place the worker: it needs {_resources(room[0])}; free in the cluster: "
                f"{_resources(short)} (an autoscaler, if any, may add a node)")

    async def start(self, gpu: str, worker_id: str, secret: str, image: str = DEFAULT_IMAGE, *,
                    cwd: str | None = None) -> RayWorker:  # cwd: seen where the node shares it (workdir.py says where not)
        spec = self.images[image]
        opts = {"num_cpus": ACTOR_CPUS}
        if gpu != "cpu":
            opts.update(num_gpus=1, accelerator_type=gpu)
        if spec.runtime_env:
            opts["runtime_env"] = spec.runtime_env
        actor = self.actor_cls.options(**opts).remote()
        log_path = os.path.join(self.log_dir, f"{worker_id}.log")
        env = {**self.passed_on(), **spec.worker_env(), settings.WORKER_ID.name: worker_id}
        if gpu == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""  # a cpu worker sees no GPU at all
        try:
            pid = await actor.start.remote(self.worker_url, env, log_path, secret)
        except asyncio.CancelledError:  # not placed in time: withdraw its claim on the cluster
            self.ray.kill(actor)
            raise
        except self.ray.exceptions.RuntimeEnvSetupError as e:
            self.ray.kill(actor)  # its environment could not be made on the node Ray chose
            raise WorkerStartFailed(f"Ray could not set up the worker's environment:\n{installer_words(e)}") from None
        handle = RayWorker(worker_id, gpu, actor, pid, log_path)
        handle.exited = asyncio.ensure_future(self._exit_code(actor))
        self.workers[worker_id] = handle
        return handle

    async def _exit_code(self, actor) -> int:
        try:
            code = await actor.wait.remote()
        except Exception:  # the actor itself died (node lost, killed)
            return -int(signal.SIGKILL)
        return code  # Popen's: negative for a signal, as asyncio's

    async def build_image(self, spec: dict, say):
        """A jupyter_gpu.Image as a ``runtime_env``: its pip layers' requirements (a later layer's
        pin of a project replaces an earlier one's) and its env layers' variables.

        The requirements are resolved here first (``uv pip compile``, about a second), so a package
        that does not exist or a conflict fails the cell with the resolver's words at once, not
        after Ray has tried (and retried) a virtualenv.  Then Ray makes the environment now, by
        one task with that runtime_env (it keeps it for the actors that follow, on that node): a
        failure is Ray's RuntimeEnvSetupError, told with the installer's lines; its setup log
        streams into the cell when the node is this machine.  Ray's environment is one piece, not
        layers: every pip layer is built again when the list changes."""
        from jupyter_gpu._wire import imagespec
        from jupyter_gpu_backend.runtimes.envs import _project
        from jupyter_gpu_backend.runtimes.images import WorkerImage

        reason = imagespec.refused_by(spec, self.name)
        if reason:
            raise ImageBuildFailed(reason)
        pins: dict = {}
        env_vars: dict = {}
        for layer in spec["layers"]:
            if layer["op"] == "pip":
                pins.update({_project(p): p for p in layer["packages"]})
            elif layer["op"] == "env":
                env_vars.update(layer["vars"])
        runtime_env = {**({"pip": sorted(pins.values())} if pins else {}), **({"env_vars": env_vars} if env_vars else {})}
        built = []
        if pins:
            say(f"jupyter-gpu: building image layer pip as Ray's runtime_env (pip: {' '.join(sorted(pins.values()))})\n")
            await self._resolves(sorted(pins.values()), say)
            await self._make_env(runtime_env, say)
            built = [h for layer, h in zip(spec["layers"], spec["hashes"][1:]) if layer["op"] == "pip"]
        image = WorkerImage(spec["name"], runtime_env=runtime_env or None)
        self.images[image.name] = image
        return image, built

    @staticmethod
    async def _resolves(requirements: list, say) -> None:
        """ImageBuildFailed with the resolver's message unless ``requirements`` resolve for this Python."""
        import tempfile

        from jupyter_gpu_backend.runtimes.envs import LocalEnvs, uv

        with tempfile.TemporaryDirectory(prefix="jupyter-gpu-ray-") as d:
            path = os.path.join(d, "requirements.in")
            with open(path, "w") as f:
                f.write("".join(r + "\n" for r in requirements))
            await LocalEnvs(root=d)._run([uv(), "pip", "compile", "--quiet", "--no-header", "--python-version",
                                          "%d.%d" % sys.version_info[:2], path], say, what="pip_install", echo=False)

    async def _make_env(self, runtime_env: dict, say) -> None:
        """Ray makes ``runtime_env`` now (a task in it), its setup log streamed to ``say`` meanwhile."""
        @self.ray.remote(num_cpus=0, max_retries=0)
        def ready() -> str:
            return sys.executable

        tail = _SetupLog(self.ray)
        ref = ready.options(runtime_env=runtime_env).remote()
        try:
            while True:
                try:
                    await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(ref.future())), 0.5)
                    break
                except asyncio.TimeoutError:
                    tail.pump(say)  # Ray writes the setup's log as it goes: what it does, half a second late
        except self.ray.exceptions.RuntimeEnvSetupError as e:
            raise ImageBuildFailed(f"pip_install failed (Ray could not set up the environment):\n{installer_words(e)}") from None
        finally:
            tail.pump(say)

    def kill(self, handle: RayWorker) -> None:
        handle.actor.signal.remote(int(signal.SIGKILL))

    def _kill_wait(self, grace: float) -> float:
        return grace  # the actor's `wait()` reports the exit

    def _free(self, handle: RayWorker) -> None:
        self.ray.kill(handle.actor)  # the actor holds its CPUs/GPUs until killed

    async def shutdown(self) -> None:
        """Every worker killed with its actor (the actor's resources freed), no exit waited for."""
        for handle in list(self.workers.values()):
            self.kill(handle)
            try:
                self.ray.kill(handle.actor)
            except Exception:
                pass
        self.workers.clear()
        shutil.rmtree(self.log_dir, ignore_errors=True)  # the workers' logs (one such directory a run piled up)


def installer_words(error: Exception) -> str:
    """The installer's own lines out of Ray's runtime-env error (its traceback and all), else its end."""
    text = str(error)
    if "Last 50 lines of stdout:" in text:
        lines = text.split("Last 50 lines of stdout:", 1)[1].splitlines()
        said = [line.strip() for line in lines if line.strip() and not line.startswith(("Traceback", "  File"))]
        return "\n".join(said[:50])
    return "\n".join(text.strip().splitlines()[-12:])


class _SetupLog:
    """The end of this driver's ``runtime_env_setup-<job>.log`` on this machine (a local cluster's),
    read a piece at a time; nothing where the node is elsewhere."""

    def __init__(self, ray):
        try:
            logs = ray._private.worker.global_worker.node.get_logs_dir_path()
            self.path = os.path.join(logs, f"runtime_env_setup-{ray.get_runtime_context().get_job_id()}.log")
        except Exception:  # a ray:// client has no local node
            self.path = None
        self.offset = os.path.getsize(self.path) if self.path and os.path.exists(self.path) else 0

    def pump(self, say) -> None:
        if not self.path:
            return
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1  # whole lines only
        self.offset += end
        for line in data[:end].decode(errors="replace").splitlines():
            say(_RAY_LOG_PREFIX.sub("", line) + "\n")


def _resources(d: dict) -> str:
    """{"CPU": 0.5, "GPU": 1} -> "0.5 CPU, 1 GPU"."""
    return ", ".join(f"{v:g} {k}" for k, v in d.items())
