"""What the scheduler keeps track of: connections, workers, leases, cells and sessions.

Every send on a connection is bounded (``Conn.send_timeout``): a peer that stops reading makes the
send wait only that long, then the connection is dropped (``Conn.on_timeout``) and the send returns
False, so a slow reader slows only itself, never a shared path (the line's announcements, a worker's
events).  One watchdog per event loop looks at the connections every quarter of the bound; a send
costs two attribute writes, not a timer (``asyncio.timeout`` costs ~8 us a send).
"""
from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, ClassVar

from jupyter_gpu._wire import framing
from jupyter_gpu._wire.pools import DEFAULT_IMAGE, pool_key

from jupyter_gpu_backend.runtimes.base import Handle
from jupyter_gpu_backend.scheduling.dedicated import SERVERLESS

LOST_NOTE = "Its namespace is lost; the next cell starts a new worker."
MAX_KEEP_WARM = 24 * 3600.0  # the longest keep-warm a client may ask (or the backend's own --keep-warm, if longer)


class Conn:
    """A websocket plus the lock that keeps a multi-frame message in one piece."""

    send_timeout: ClassVar[float] = 30.0  # seconds one send may wait for the peer to read (--send-timeout)

    def __init__(self, ws):
        self.ws = ws
        self.lock = asyncio.Lock()
        self.open = True
        self.timed_out = False
        self.on_timeout: Callable[[], None] | None = None  # called once when a send waited too long
        self.closing: asyncio.Future | None = None  # its close, under way after a timeout (api/kernels.py)
        self._sender: asyncio.Task | None = None  # the task waiting in a send, and since when
        self._since = 0.0
        _Watchdog.watch(self)

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
        self._sender = task = asyncio.current_task()  # what the watchdog reads
        self._since = time.monotonic()
        try:
            await self.ws.send_bytes(frame if isinstance(frame, bytes) else bytes(frame))
            return True
        except asyncio.CancelledError:
            # the watchdog's cancel (this send waited past the bound) ends this send only; any other
            # cancel of the task goes on
            if self.timed_out and task is not None and task.uncancel() == 0:
                return False
            raise
        except Exception:
            self.open = False
            return False
        finally:
            self._sender = None

    def _time_out(self) -> None:
        """The peer has not read for ``send_timeout``: the connection is dropped and the waiting send ends."""
        self.timed_out, self.open = True, False
        if self._sender is not None:
            self._sender.cancel()
        if self.on_timeout is not None:
            self.on_timeout()

    async def send(self, header: dict, buffers=()) -> bool:
        return await self.send_frames(framing.encode(header, buffers))


class _Watchdog:
    """Per event loop: every quarter of ``Conn.send_timeout``, time out the sends waiting longer.
    A chain of timer callbacks, not a task: nothing is left pending when a loop closes."""

    conns: ClassVar[weakref.WeakSet] = weakref.WeakSet()
    loops: ClassVar[weakref.WeakSet] = weakref.WeakSet()  # loops whose chain runs

    @classmethod
    def watch(cls, conn: Conn) -> None:
        cls.conns.add(conn)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # (made outside a loop: nothing sends on it before one runs)
            return
        if loop not in cls.loops:
            cls.loops.add(loop)
            loop.call_later(Conn.send_timeout / 4, cls._check, loop)

    @classmethod
    def _check(cls, loop) -> None:
        now, bound = time.monotonic(), Conn.send_timeout
        for conn in list(cls.conns):
            sender = conn._sender
            if sender is not None and now - conn._since > bound and not conn.timed_out and sender.get_loop() is loop:
                conn._time_out()
        if not loop.is_closed():
            loop.call_later(bound / 4, cls._check, loop)


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
    heard: float = 0.0  # when it last sent anything (api/workers.py: its heartbeat)
    # its connection's resume (api/workers.py): the key it shows, the last ``wseq`` of its messages
    # taken, and, while it is away, what its coming back resolves
    resume_key: str = ""
    wseq_in: int = 0
    resumed: asyncio.Future | None = None
    hung: str | None = None  # why it was killed as hung (Scheduler.hung): its exit cause

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

    @property
    def row(self) -> str:
        """Its key in the backend (ledger row, budgets, the line): the kernel chose its id, so the id
        counts only within its session (a session is one user's)."""
        return row_id(self.session.id, self.id)


def row_id(session: str, cell: str) -> str:
    """A cell's key in the backend: (session, cell) as one string (ledger.cell_id undoes it)."""
    return f"{session}/{cell}"


@dataclass
class Session:
    kernel: ClassVar[bool] = True  # a kernel's (jobs.py's JobSession, the backend's own: False)
    id: str
    user: str
    conn: Conn | None = None
    leases: dict = field(default_factory=dict)  # pool key (images.pool_key: gpu, or gpu@image) -> Lease
    # the kernel's versions its default workers have (follow.py): distribution -> version, and their directory
    follow_pins: dict = field(default_factory=dict)
    follow_dir: str | None = None
    follow_tried: dict = field(default_factory=dict)  # the last pins asked for, made or not (not again)
    seq: int = 0
    # the events a kernel has not acknowledged (seq, frames, bytes), oldest first, to replay to it when
    # it resumes a dropped connection (api/kernels.py); at most ``keep_bytes``, the oldest let go first
    kept: deque = field(default_factory=deque)
    kept_bytes: int = 0
    let_go: int = 0  # the last seq let go unacknowledged (a resume from before it has a gap)
    keep_bytes: ClassVar[int] = 64 * 1024 * 1024  # (--resume-buffer)
    # its relayed cells from their start to their end (lifecycle.py), by the kernel's id: an id in
    # use is refused to a second cell, which would share its row, its budget entry and its stop
    cells: dict = field(default_factory=dict)
    starting: dict = field(default_factory=dict)  # pool key -> the lock its worker's start holds (scheduler.py)

    async def emit(self, header: dict, inline=b"", frames=()) -> None:
        """Stamp the session's next sequence number, keep the event until the kernel acknowledges
        it, and send it to the kernel (none connected, or one whose connection broke: it is kept)."""
        self.seq += 1
        header["seq"] = self.seq
        data = [framing.with_header(header, inline), *frames]
        if self.kernel:  # (~0.3 us an event: one frame's length, one append)
            size = len(data[0]) if len(data) == 1 else sum(map(len, data))
            self.kept.append((self.seq, data, size))
            self.kept_bytes += size
            if self.kept_bytes > self.keep_bytes:
                self._let_go()
        if self.conn is not None:
            await self.conn.send_frames(data)

    def _let_go(self) -> None:
        """Over ``keep_bytes``: the oldest unacknowledged events go (a resume from before them says so)."""
        while self.kept_bytes > self.keep_bytes and len(self.kept) > 1:
            seq, _, n = self.kept.popleft()
            self.kept_bytes -= n
            self.let_go = seq

    def acknowledged(self, upto: int) -> None:
        """The kernel has every event up to ``upto``: they are not kept any longer."""
        kept = self.kept
        while kept and kept[0][0] <= upto:
            self.kept_bytes -= kept.popleft()[2]
