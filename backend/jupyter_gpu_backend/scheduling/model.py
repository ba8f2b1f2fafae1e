"""What the scheduler keeps track of: connections, workers, leases, cells and sessions."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from jupyter_gpu._wire import framing
from jupyter_gpu._wire.pools import DEFAULT_IMAGE, pool_key

from jupyter_gpu_backend.runtimes.base import Handle
from jupyter_gpu_backend.scheduling.dedicated import SERVERLESS

LOST_NOTE = "Its namespace is lost; the next cell starts a new worker."


class Conn:
    """A websocket plus the lock that keeps a multi-frame message in one piece."""

    def __init__(self, ws):
        self.ws = ws
        self.lock = asyncio.Lock()
        self.open = True

    async def send_frames(self, frames, more=None) -> bool:
        """Send ``frames`` and then, if given, the frames of the async iterator ``more``.

        Returns False when this connection is broken; errors of ``more`` itself propagate.
        """
        async with self.lock:
            for f in frames:
                if not await self._send(f):
                    return False
            if more is not None:
                async for f in more:
                    if not await self._send(f):
                        return False
        return True

    async def _send(self, frame) -> bool:
        if not self.open:
            return False
        try:
            await self.ws.send_bytes(frame if isinstance(frame, bytes) else bytes(frame))
            return True
        except Exception:
            self.open = False
            return False

    async def send(self, header: dict, buffers=()) -> bool:
        return await self.send_frames(framing.encode(header, buffers))


@dataclass
class Worker:
    id: str
    gpu: str
    handle: "Handle | None"  # the runtime's handle (runtimes/base.py)
    registered: asyncio.Future
    conn: Conn | None = None
    info: dict = field(default_factory=dict)
    session: "Session | None" = None
    cell: "CellRun | None" = None
    killed_reason: str | None = None
    startup_s: float = 0.0
    slot_released: bool = False
    stopping: bool = False
    retired: bool = False  # it exited on its own after `retire` (keep-warm ran out)
    lane: dict | None = None  # the worker's direct lane {path, secret} (same-host runtimes)
    cells: int = 0  # cells it ran, through the backend or metered from its lane
    lane_cell: str | None = None  # the lane cell it runs (between `started` and `metered`)
    reported: asyncio.Future | None = None  # answered by its `reported` (LaneCells.settle)
    exit_cause: str | None = None  # why it is gone, once it is
    pool: str = SERVERLESS  # or DEDICATED: an always-on worker of the hybrid pool (dedicated.py)
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    image: str = DEFAULT_IMAGE  # the worker image it started from (images.py)

    @property
    def device(self) -> str:
        return self.info.get("device", self.gpu)

    @property
    def key(self) -> str:
        """Its (GPU type, image) pool: the key of its lease and of its max_workers slot."""
        return pool_key(self.gpu, self.image)

    @property
    def start_method(self) -> str:
        """How its runtime started it ("zygote", "spawn", "container", "ray actor"); "spawn" until
        the runtime has given its handle (a worker may register before that)."""
        return self.handle.start_method if self.handle is not None else "spawn"

    def loss(self) -> tuple[str, str]:
        """(status, what happened) for a cell that died with this worker, once it is gone."""
        if self.killed_reason:
            return "killed", self.killed_reason
        return "lost", f"worker {self.id} on {self.device} died while running the cell: {self.exit_cause}"


@dataclass
class Lease:
    session: "Session"
    gpu: str
    worker: Worker
    keep_warm: float
    idle_since: float | None = None
    expiry: asyncio.TimerHandle | None = None
    image: str = DEFAULT_IMAGE

    @property
    def key(self) -> str:  # the key of Session.leases
        return pool_key(self.gpu, self.image)

    def keep_warm_left(self) -> float | None:
        if self.idle_since is None:
            return None
        return max(0.0, self.keep_warm - (time.monotonic() - self.idle_since))


@dataclass
class CellRun:
    id: str
    session: "Session"
    gpu: str
    t_submit: float
    queue: float = 0.0
    cold_start: float = 0.0
    cold: bool = False
    t_dispatch: float = 0.0
    worker: Worker | None = None
    interrupts: int = 0
    image: str = DEFAULT_IMAGE
    cwd: str | None = None  # the kernel's directory, for a cold start's bind mount (the owner's cells only)
    function: str | None = None  # a function's call: its name@hash (messages.function_label)
    build: float = 0.0  # seconds its jupyter_gpu.Image took to build (0: built before)

    @property
    def key(self) -> str:  # the (GPU type, image) pool it runs in
        return pool_key(self.gpu, self.image)


@dataclass
class Session:
    id: str
    user: str
    conn: Conn | None = None
    leases: dict = field(default_factory=dict)  # pool key (images.pool_key: gpu, or gpu@image) -> Lease
    # the kernel's versions its default workers have (follow.py): distribution -> version, and their directory
    follow_pins: dict = field(default_factory=dict)
    follow_dir: str | None = None
    follow_tried: dict = field(default_factory=dict)  # the last pins asked for, made or not (not again)
    seq: int = 0

    async def emit(self, header: dict, inline=b"", frames=()) -> None:
        """Stamp the session's next sequence number and send an event to the kernel."""
        self.seq += 1
        header["seq"] = self.seq
        if self.conn is not None:
            await self.conn.send_frames([framing.with_header(header, inline), *frames])
