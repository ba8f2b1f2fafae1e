"""Worker slots per GPU type: at most ``max_workers`` alive at once, the rest wait in FIFO order.

A slot is taken before a worker starts and given back when it is gone; a freed slot passes straight
to the first waiter.  Waiters are told their position whenever it changes (``on_position``), off the
path that hands slots over: a waiter whose kernel reads slowly delays only the notes after its own.
Waiters are keyed by the cell's row (session/cell, model.row_id): one session's stop reaches only
its own cells.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable


class QueueCancelled(Exception):
    """The waiting request was withdrawn (its cell was interrupted)."""


@dataclass
class _Waiter:
    key: str
    future: asyncio.Future
    on_position: Callable[[int], Awaitable[None]]


@dataclass
class Capacity:
    max_workers: int | None = None  # per GPU type; None: unlimited
    counts: dict = field(default_factory=dict)
    queues: dict = field(default_factory=dict)

    async def acquire(self, gpu: str, key: str, on_position: Callable[[int], Awaitable[None]]) -> float:
        """Take a slot for ``gpu``, waiting in line if needed; returns the seconds waited."""
        queue = self.queues.setdefault(gpu, [])
        if self.max_workers is None or (self.counts.get(gpu, 0) < self.max_workers and not queue):
            self.counts[gpu] = self.counts.get(gpu, 0) + 1
            return 0.0
        t0 = time.monotonic()
        waiter = _Waiter(key, asyncio.get_running_loop().create_future(), on_position)
        queue.append(waiter)
        await on_position(len(queue))  # (the others' places did not change)
        await waiter.future  # resolved with the slot handed over, or QueueCancelled
        return time.monotonic() - t0

    def try_acquire(self, gpu: str) -> bool:
        """Take a slot only if one is free and nobody waits (pre-started spares never queue)."""
        if self.max_workers is not None and (self.counts.get(gpu, 0) >= self.max_workers or self.queues.get(gpu)):
            return False
        self.counts[gpu] = self.counts.get(gpu, 0) + 1
        return True

    def release(self, gpu: str) -> None:
        queue = self.queues.get(gpu)
        if queue:
            queue.pop(0).future.set_result(None)  # the slot goes on, the count stays
            asyncio.ensure_future(self._announce(gpu))
        else:
            self.counts[gpu] = max(0, self.counts.get(gpu, 0) - 1)

    def cancel(self, key: str) -> bool:
        for gpu, queue in self.queues.items():
            for w in queue:
                if w.key == key:
                    queue.remove(w)
                    w.future.set_exception(QueueCancelled(key))
                    asyncio.ensure_future(self._announce(gpu))
                    return True
        return False

    def position(self, gpu: str, key: str) -> int | None:
        for i, w in enumerate(self.queues.get(gpu, ())):
            if w.key == key:
                return i + 1
        return None

    async def _announce(self, gpu: str) -> None:
        for i, w in enumerate(list(self.queues.get(gpu, ()))):
            await w.on_position(i + 1)
