"""min_warm: workers started ahead of need and left unleased, per GPU type.

A cold cell takes one (no cold start) and the pool refills in the background.  Spares hold
``max_workers`` slots but never queue for one: waiting cells come first.  A spare has run nobody's
code, so it may go to any user; once leased it serves that session for life.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

def pop_live(workers: list):
    """Take the first worker of ``workers`` whose connection is open (dropping dead ones before
    it) off the list; None when there is none.  Spares and free dedicated workers alike."""
    while workers:
        worker = workers.pop(0)
        if worker.conn is not None and worker.conn.open:
            return worker
    return None


async def wait_settled(changed: asyncio.Event, settled, timeout: float) -> bool:
    """Wait, waking whenever ``changed`` is set, until ``settled()``; False when ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while not settled():
        changed.clear()
        try:
            await asyncio.wait_for(changed.wait(), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            return False
    return True


log = logging.getLogger("jupyter_gpu_backend")


class SparePool:
    def __init__(self, min_warm: int, capacity, start_worker: Callable[[str], Awaitable], offers: Callable[[], list]):
        self.min_warm = min_warm
        self.capacity = capacity
        self.start_worker = start_worker
        self.offers = offers
        self.spares: dict[str, list] = {}
        self._filling: dict[str, int] = {}
        self._changed: asyncio.Event | None = None
        # spares wanted per type: min_warm, or more by the autoscaling rules (autoscale.py)
        self.target: Callable[[str], int] = lambda gpu: self.min_warm
        self.closing = False  # the backend is stopping: a spare killed now is not replaced

    def count(self, gpu: str) -> int:
        return len(self.spares.get(gpu, []))

    def take(self, gpu: str):
        """A live spare for ``gpu`` (and a refill started), or None."""
        worker = pop_live(self.spares.get(gpu, []))
        if worker is not None:
            self._notify()
            asyncio.ensure_future(self.refill(gpu))
        return worker

    def discard(self, worker) -> None:
        """A spare died: replace it."""
        for gpu, pool in self.spares.items():
            if worker in pool:
                pool.remove(worker)
                asyncio.ensure_future(self.refill(gpu))

    async def refill(self, gpu: str) -> None:
        while not self.closing and len(self.spares.get(gpu, [])) + self._filling.get(gpu, 0) < self.target(gpu):
            if not self.capacity.try_acquire(gpu):
                return  # max_workers reached: cells come first
            self._filling[gpu] = self._filling.get(gpu, 0) + 1
            try:
                worker = await self.start_worker(gpu)
            except Exception as e:
                self.capacity.release(gpu)
                log.warning("could not pre-start a %s worker: %s", gpu, e)
                return
            finally:
                self._filling[gpu] -= 1
            self.spares.setdefault(gpu, []).append(worker)
            self._notify()

    def start(self) -> None:
        if self.min_warm:
            for gpu in self.offers():
                asyncio.ensure_future(self.refill(gpu))

    def sizes(self) -> dict:
        return {g: len(p) for g, p in self.spares.items()}

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def wait_full(self, timeout: float) -> bool:
        """Wait until every GPU type has its spares, no fewer and no more (``min_warm``, or the
        autoscaling target, extras stopped after the scale-down delay); False on timeout."""
        self._changed = self._changed or asyncio.Event()
        return await wait_settled(
            self._changed, lambda: all(len(self.spares.get(g, [])) == self.target(g) for g in self.offers()), timeout)
