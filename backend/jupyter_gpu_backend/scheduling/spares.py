"""min_warm: workers started ahead of need and left unleased, per GPU type.

A cold cell takes one (no cold start) and the pool refills in the background.  Spares hold
``max_workers`` slots but never queue for one: waiting cells come first.  A spare has run nobody's
code, so it may go to any user; once leased it serves that session for life.

An *early* spare (``early``; the embedded backend's ``--early-worker``) is one more, started once as
the backend starts, for the cell its starter is about to send: never replaced, and stopped when no
cell took it within keep_warm.  A cell that finds no spare up but one starting waits for that one
(``take_starting``) instead of starting another beside it.
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
        self.early_spares: dict = {}  # worker id -> an early spare up and not taken (beyond the target; never replaced)
        self._early_starting: dict[str, int] = {}  # early spares still starting, per type

    def count(self, gpu: str) -> int:
        return len(self.spares.get(gpu, []))

    def take(self, gpu: str):
        """A live spare for ``gpu`` (and a refill started), or None."""
        worker = pop_live(self.spares.get(gpu, []))
        if worker is not None:
            self.early_spares.pop(worker.id, None)
            self._notify()
            asyncio.ensure_future(self.refill(gpu))
        return worker

    def starting(self, gpu: str) -> bool:
        """Whether a spare of ``gpu`` is being started now."""
        return self._filling.get(gpu, 0) > 0

    async def take_starting(self, gpu: str, timeout: float):
        """A spare of ``gpu`` once one being started is up (a cell that came during its start waits
        for it, not for a second start beside it); None when none is starting, or all that were
        are up and taken, failed, or ``timeout`` passed."""
        self._changed = self._changed or asyncio.Event()
        await wait_settled(self._changed, lambda: self.count(gpu) > 0 or not self.starting(gpu), timeout)
        return self.take(gpu)

    def early(self, gpu: str, ttl: float, stop: Callable[[object], Awaitable]) -> None:
        """Start one spare of ``gpu`` now, beyond the target: taken as any spare, never replaced,
        stopped (``stop``) if no cell has taken it ``ttl`` seconds after it is up."""
        self._early_starting[gpu] = self._early_starting.get(gpu, 0) + 1
        asyncio.ensure_future(self._start_early(gpu, ttl, stop))

    async def _start_early(self, gpu: str, ttl: float, stop) -> None:
        try:
            worker = None if self.closing else await self._start_one(gpu, "could not start the early %s worker: %s")
            if worker is not None:
                self.early_spares[worker.id] = worker
                asyncio.get_running_loop().call_later(ttl, lambda: asyncio.ensure_future(self._expire(worker, stop)))
        finally:
            self._early_starting[gpu] -= 1
            self._notify()

    async def _expire(self, worker, stop) -> None:
        """The early spare's keep_warm passed with no cell taking it: it stops."""
        if self.early_spares.pop(worker.id, None) is None or self.closing:
            return
        pool = self.spares.get(worker.gpu, [])
        if worker in pool:
            pool.remove(worker)
            await stop(worker)
        self._notify()

    def discard(self, worker) -> None:
        """A spare died: replace it (an early one is not: it was one more than the target)."""
        self.early_spares.pop(worker.id, None)
        for gpu, pool in self.spares.items():
            if worker in pool:
                pool.remove(worker)
                asyncio.ensure_future(self.refill(gpu))

    async def refill(self, gpu: str) -> None:
        while not self.closing and len(self.spares.get(gpu, [])) + self._filling.get(gpu, 0) < self.target(gpu):
            if await self._start_one(gpu, "could not pre-start a %s worker: %s") is None:
                return
            self._notify()

    async def _start_one(self, gpu: str, failed: str):
        """One spare of ``gpu`` started and in the pool; None when max_workers is reached (cells come
        first) or its start failed (said in the log, as ``failed`` % (gpu, why))."""
        if not self.capacity.try_acquire(gpu):
            return None
        self._filling[gpu] = self._filling.get(gpu, 0) + 1
        try:
            worker = await self.start_worker(gpu)
        except Exception as e:
            self.capacity.release(gpu)
            log.warning(failed, gpu, e)
            return None
        finally:
            self._filling[gpu] -= 1
        self.spares.setdefault(gpu, []).append(worker)
        return worker

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
        return await wait_settled(self._changed, lambda: all(
            len(self.spares.get(g, [])) == self.target(g) + self._early(g) for g in self.offers()), timeout)

    def _early(self, gpu: str) -> int:
        """Early spares of ``gpu`` starting or up and untaken (beyond the target)."""
        return self._early_starting.get(gpu, 0) + sum(1 for w in self.early_spares.values() if w.gpu == gpu)
