"""A runtime with only what the interface requires (runtimes/base.py), for tests of the scheduler
and the API without starting workers: ``kill`` ends a worker as SIGKILL would."""
from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field

from jupyter_gpu_backend.runtimes.base import Runtime


@dataclass
class FakeHandle:
    worker_id: str
    log_path: str = "/nonexistent/worker.log"
    exited: asyncio.Future = field(default=None)
    start_method: str = "fake"


class FakeRuntime(Runtime):
    name = "fake"

    def __init__(self):
        super().__init__("ws://127.0.0.1:1/ws/worker")
        self.killed: list[str] = []

    def offers(self) -> list[str]:
        return ["T4", "cpu"]

    async def start(self, gpu, worker_id, secret, image="default", cwd=None):
        handle = FakeHandle(worker_id, exited=asyncio.get_running_loop().create_future())
        self.workers[worker_id] = handle
        return handle

    def kill(self, handle) -> None:
        self.killed.append(handle.worker_id)
        if not handle.exited.done():
            handle.exited.set_result(-int(signal.SIGKILL))
