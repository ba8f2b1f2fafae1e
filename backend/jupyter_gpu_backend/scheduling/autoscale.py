"""Autoscaling beyond ``min_warm``: how many unleased spares each GPU type should have right now.

Two demand rules, on top of the floor ``min_warm`` (Modal: ``min_containers``):

- ``--scale-up-queue N``: when N or more cells are waiting for a worker of a type (in the
  ``max_workers`` line or in a cold start), start one spare beyond ``min_warm`` per N waiting, so
  the next cell of the burst finds a warm worker.
- ``--target-utilisation U`` (0 < U < 1; Modal's ``buffer_containers`` is the fixed-count cousin):
  keep enough spares that leased / (leased + spares) stays under U.  Free dedicated workers count
  as spares (they take the next cell first).

Always within ``max_workers`` (Modal: ``max_containers``): spares never take a slot a waiting cell
needs.  Spares beyond the target are stopped once they have stayed beyond it for the scale-down
delay (``keep_warm``; Modal: ``scaledown_window``).  ``target_spares`` is the pure decision; the
``Autoscaler`` reads the scheduler's state and tells the spare pool.
"""
from __future__ import annotations

import asyncio
import math
from contextlib import contextmanager


def spares_for_utilisation(leased: int, target: float) -> int:
    """The fewest spares s with leased / (leased + s) < target (0 when nothing is leased)."""
    if leased <= 0:
        return 0
    if not 0 < target < 1:
        raise ValueError(f"target utilisation must be between 0 and 1 (exclusive), not {target}")
    # s > leased * (1/target - 1); the smallest such integer
    return math.floor(leased * (1.0 / target - 1.0) + 1e-9) + 1


def target_spares(*, min_warm: int = 0, leased: int = 0, waiting: int = 0, free_dedicated: int = 0,
                  busy_serverless: int = 0, scale_up_queue: int | None = None,
                  target_utilisation: float | None = None, max_workers: int | None = None) -> int:
    """How many serverless spares a GPU type should have.

    leased: workers of the type leased to sessions (dedicated or serverless); waiting: cells waiting
    for a worker of it (queued or cold-starting); free_dedicated: unleased dedicated workers;
    busy_serverless: serverless workers alive that are not spares (leased, or starting for a cell)."""
    want = min_warm
    if scale_up_queue and waiting >= scale_up_queue:
        want = max(want, min_warm + waiting // scale_up_queue)
    if target_utilisation:
        want = max(want, spares_for_utilisation(leased, target_utilisation) - free_dedicated)
    if max_workers is not None:  # spares only in slots nobody else holds
        want = min(want, max(0, max_workers - busy_serverless))
    return max(0, want)


class Autoscaler:
    """Keeps the spare pool at ``target_spares`` as leases and waiting cells come and go."""

    def __init__(self, scheduler, scale_up_queue: int | None = None, target_utilisation: float | None = None):
        if target_utilisation is not None:
            spares_for_utilisation(1, target_utilisation)  # validates the range
        if scale_up_queue is not None and scale_up_queue < 1:
            raise ValueError(f"--scale-up-queue must be at least 1, not {scale_up_queue}")
        self.scheduler = scheduler
        self.scale_up_queue = scale_up_queue
        self.target_utilisation = target_utilisation
        self.waiting_cells: dict[str, int] = {}
        self._trims: dict[str, asyncio.TimerHandle] = {}

    @property
    def active(self) -> bool:
        return bool(self.scale_up_queue or self.target_utilisation)

    def target(self, gpu: str) -> int:
        s = self.scheduler
        leased = sum(1 for sess in s.sessions.values() if gpu in sess.leases)
        busy_serverless = s.capacity.counts.get(gpu, 0) - s.spares.count(gpu)
        return target_spares(
            min_warm=s.spares.min_warm, leased=leased, waiting=self.waiting_cells.get(gpu, 0),
            free_dedicated=len(s.dedicated.free.get(gpu, [])), busy_serverless=busy_serverless,
            scale_up_queue=self.scale_up_queue, target_utilisation=self.target_utilisation,
            max_workers=s.capacity.max_workers)

    @contextmanager
    def waiting(self, gpu: str):
        """A cell waits for a worker of ``gpu`` (in line or cold-starting) while inside."""
        self.waiting_cells[gpu] = self.waiting_cells.get(gpu, 0) + 1
        self.changed(gpu)
        try:
            yield
        finally:
            self.waiting_cells[gpu] -= 1
            self.changed(gpu)  # fewer waiting: the queue rule may want fewer spares

    def changed(self, gpu: str) -> None:
        """Demand for ``gpu`` moved: start spares up to the target now; trim extras after the delay."""
        if not self.active or self.scheduler.dedicated.closing:
            return
        pool = self.scheduler.spares
        asyncio.ensure_future(pool.refill(gpu))
        if pool.count(gpu) > self.target(gpu) and gpu not in self._trims:
            delay = self.scheduler.keep_warm
            self._trims[gpu] = asyncio.get_running_loop().call_later(
                delay, lambda: asyncio.ensure_future(self._trim(gpu)))

    async def _trim(self, gpu: str) -> None:
        self._trims.pop(gpu, None)
        pool = self.scheduler.spares
        while pool.count(gpu) > self.target(gpu):
            worker = pool.spares[gpu].pop()
            await self.scheduler.stop_worker(worker)
        pool._notify()  # /api/runtime?wait waits for the pool to settle at its target

    def status(self) -> dict:
        return {"scale_up_queue": self.scale_up_queue, "target_utilisation": self.target_utilisation,
                "waiting": dict(self.waiting_cells)}
