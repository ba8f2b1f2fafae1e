"""The `local` runtime: worker processes on this machine, one GPU each, or the CPU.

Issue 3 starts each worker as a fresh `python -m jupyter_gpu_worker`; the pre-imported zygote is
issue 4's.  Workers run in their own session so a Ctrl-C aimed at the backend's terminal never
reaches user code, and their output goes to a log whose tail explains a failed start.
"""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
from dataclasses import dataclass, field


@dataclass
class WorkerProcess:
    worker_id: str
    gpu: str
    proc: asyncio.subprocess.Process
    log_path: str
    device_index: int | None = None
    exited: asyncio.Future = field(default=None)


def detect_gpus() -> dict[str, list[int]]:
    """GPU type -> device indices, from NVML; empty without a GPU (never a pretend GPU)."""
    try:
        import pynvml
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
    except Exception:
        return {}
    from jupyter_gpu_worker.device import gpu_type_of

    found: dict[str, list[int]] = {}
    try:
        for i in range(pynvml.nvmlDeviceGetCount()):
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
            name = name.decode() if isinstance(name, bytes) else name
            found.setdefault(gpu_type_of(name), []).append(i)
    finally:
        pynvml.nvmlShutdown()
    return found


class LocalRuntime:
    name = "local"
    shares_host = True  # workers see the backend host's /dev/shm

    def __init__(self, worker_url: str):
        self.worker_url = worker_url
        self.gpus = detect_gpus()
        self.log_dir = tempfile.mkdtemp(prefix="jupyter-gpu-workers-")
        self.workers: dict[str, WorkerProcess] = {}
        self._next_index: dict[str, int] = {}

    def offers(self) -> list[str]:
        return sorted(self.gpus) + ["cpu"]

    def default_gpu(self) -> str:
        return self.offers()[0]

    def _pick_index(self, gpu: str) -> int | None:
        indices = self.gpus.get(gpu)
        if not indices:
            return None
        i = self._next_index.get(gpu, 0)
        self._next_index[gpu] = i + 1
        return indices[i % len(indices)]

    async def start(self, gpu: str, worker_id: str, secret: str) -> WorkerProcess:
        index = self._pick_index(gpu)
        env = dict(os.environ)
        env["JUPYTER_GPU_WORKER_SECRET"] = secret
        env["JUPYTER_GPU_WORKER_ID"] = worker_id
        # a cpu worker sees no GPU at all; a GPU worker sees exactly its own
        env["CUDA_VISIBLE_DEVICES"] = "" if index is None else str(index)
        env.setdefault("PYTHONUNBUFFERED", "1")
        log_path = os.path.join(self.log_dir, f"{worker_id}.log")
        with open(log_path, "wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "jupyter_gpu_worker",
                "--url",
                self.worker_url,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        handle = WorkerProcess(worker_id, gpu, proc, log_path, index)
        handle.exited = asyncio.ensure_future(proc.wait())
        self.workers[worker_id] = handle
        return handle

    def kill(self, handle: WorkerProcess) -> None:
        if handle.proc.returncode is None:
            try:
                os.killpg(handle.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    async def stop(self, handle: WorkerProcess, grace: float = 2.0) -> None:
        """The worker was asked to shut down; make sure it is gone within ``grace`` seconds."""
        try:
            await asyncio.wait_for(asyncio.shield(handle.exited), grace)
        except asyncio.TimeoutError:
            self.kill(handle)
            await handle.exited
        self.workers.pop(handle.worker_id, None)

    async def exit_cause(self, handle: WorkerProcess, timeout: float = 2.0) -> str:
        try:
            code = await asyncio.wait_for(asyncio.shield(handle.exited), timeout)
        except asyncio.TimeoutError:
            return "its connection closed while the process kept running"
        if code < 0:
            try:
                return f"the process was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"the process was killed by signal {-code}"
        return f"the process exited with code {code}"

    def log_tail(self, handle: WorkerProcess, limit: int = 2000) -> str:
        try:
            with open(handle.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - limit))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    async def shutdown(self) -> None:
        for handle in list(self.workers.values()):
            self.kill(handle)
        for handle in list(self.workers.values()):
            try:
                await asyncio.wait_for(handle.exited, 5)
            except asyncio.TimeoutError:
                pass
        self.workers.clear()
