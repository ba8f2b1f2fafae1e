"""Hybrid pools: ``dedicated = N`` always-on workers per GPU type, serverless for the overflow.

``jupyter-gpu serve --dedicated cpu=1,H100=2`` (or ``[pools.H100] dedicated = 2`` in ``--config``)
starts N workers per type with the backend.  They are never scaled to zero and take work first: a
cold cell gets a free dedicated worker before any serverless start (a ``min_warm`` spare or a cold
start).  Dedicated workers hold no ``max_workers`` slot: that cap is on the serverless overflow.

Isolation: a dedicated worker serves one session at a time and is *recycled* when that session lets
it go (release, keep-warm expiry, its kernel gone) or when it dies: the process is stopped and a
fresh one (forked from the zygote on the local runtime) takes its place, so the pool stays at N and
no user's namespace reaches another user.

Attribution: every worker and cell row of the ledger has ``pool`` (``dedicated``/``serverless``).
A dedicated worker's lifetime (request to stop) is billed to the dedicated pool per hour, busy or
not; ``pool_usage`` sums it from the ledger, so its idle seconds are the pool's, never a session's.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from jupyter_gpu.cost.pricing import price_for

from jupyter_gpu_backend.scheduling.spares import pop_live, wait_settled

log = logging.getLogger("jupyter_gpu_backend")
DEDICATED, SERVERLESS = "dedicated", "serverless"


def parse_sizes(spec: str | None) -> dict[str, int]:
    """'cpu=1,H100=2' -> {'cpu': 1, 'H100': 2}; ValueError with the reason otherwise."""
    sizes: dict[str, int] = {}
    for part in (p.strip() for p in (spec or "").split(",")):
        if not part:
            continue
        gpu, eq, n = part.partition("=")
        gpu = gpu.strip()
        if not eq or not gpu or not n.strip().isdigit():
            raise ValueError(f"bad --dedicated entry {part!r}: use GPU=N, e.g. cpu=1,H100=2")
        sizes[gpu] = int(n)
    return {g: n for g, n in sizes.items() if n > 0}


class DedicatedPool:
    def __init__(self, sizes: dict[str, int], start_worker: Callable[..., Awaitable], ledger_of: Callable):
        self.sizes = dict(sizes)
        self.start_worker = start_worker  # Scheduler.start_worker(gpu, pool=...)
        self.ledger_of = ledger_of  # the scheduler's ledger (budgets may wrap it later)
        self.members: dict[str, dict] = {}  # gpu -> {worker id: worker}, live (free or leased)
        self.free: dict[str, list] = {}  # gpu -> registered, unleased dedicated workers
        self.waiters: dict[str, list] = {}  # gpu -> futures of cells in the max_workers line
        self._filling: dict[str, int] = {}
        self.closing = False
        self._changed = asyncio.Event()
        self.recycled = 0  # workers replaced by a fresh process

    def check(self, offers: list[str]) -> None:
        """Refuse (ValueError) a dedicated size for a type the runtime does not offer."""
        missing = [g for g in self.sizes if g not in offers]
        if missing:
            raise ValueError(f"--dedicated {', '.join(missing)}: this runtime offers only {', '.join(offers)}")

    def start(self) -> None:
        for gpu in self.sizes:
            asyncio.ensure_future(self.fill(gpu))

    def take(self, gpu: str):
        """A free live dedicated worker for ``gpu``, or None (then serverless takes the cell)."""
        worker = pop_live(self.free.get(gpu, []))
        if worker is not None:
            self._notify()
        return worker

    def is_member(self, worker) -> bool:
        return worker.id in self.members.get(worker.gpu, {})

    def recycle(self, worker) -> None:
        """``worker`` is going (its session let it go, or it died): a fresh process takes its place."""
        members = self.members.get(worker.gpu)
        if not members or worker.id not in members:
            return  # not ours, or already replaced (stop_worker and worker_gone both call this)
        del members[worker.id]
        if worker in self.free.get(worker.gpu, []):
            self.free[worker.gpu].remove(worker)
        self.recycled += 1
        self._notify()
        if not self.closing:
            asyncio.ensure_future(self.fill(worker.gpu))

    async def fill(self, gpu: str) -> None:
        while not self.closing and len(self.members.get(gpu, ())) + self._filling.get(gpu, 0) < self.sizes.get(gpu, 0):
            self._filling[gpu] = self._filling.get(gpu, 0) + 1
            try:
                worker = await self.start_worker(gpu, pool=DEDICATED)
            except Exception as e:
                log.warning("could not start a dedicated %s worker: %s", gpu, e)
                return
            finally:
                self._filling[gpu] -= 1
            if self.closing:
                return
            self.members.setdefault(gpu, {})[worker.id] = worker
            self._give(gpu, worker)

    def _give(self, gpu: str, worker) -> None:
        """A dedicated worker is free: to the first cell waiting in the line, else to the free list."""
        waiters = self.waiters.get(gpu, [])
        while waiters:
            fut = waiters.pop(0)
            if not fut.done():
                fut.set_result(worker)
                self._notify()
                return
        self.free.setdefault(gpu, []).append(worker)
        self._notify()

    async def slot_or_worker(self, gpu: str, key: str, capacity, on_position) -> tuple[float, object]:
        """Wait for a ``max_workers`` slot (then cold-start a serverless worker) or for a dedicated
        worker to come free, whichever is first: (seconds waited, the dedicated worker or None)."""
        if not self.sizes.get(gpu):
            return await capacity.acquire(gpu, key, on_position), None
        t0 = time.monotonic()
        handed = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(gpu, []).append(handed)
        slot = asyncio.ensure_future(capacity.acquire(gpu, key, on_position))

        def leave_line() -> None:  # a slot that still arrives goes straight back
            capacity.cancel(key)
            slot.add_done_callback(lambda t: None if t.cancelled() or t.exception() else capacity.release(gpu))

        try:
            await asyncio.wait([slot, handed], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            leave_line()
            raise
        finally:
            if handed in self.waiters.get(gpu, []):
                self.waiters[gpu].remove(handed)
        if handed.done() and not slot.done():  # a dedicated worker came free first: leave the line
            leave_line()
            return time.monotonic() - t0, handed.result()
        if handed.done():  # both at once: keep the slot's path, the worker goes back
            self._give(gpu, handed.result())
        else:
            handed.cancel()
        return slot.result(), None  # QueueCancelled when the cell was interrupted in the line

    def status(self) -> dict:
        return {g: {"size": n, "live": len(self.members.get(g, ())), "free": len(self.free.get(g, []))}
                for g, n in self.sizes.items()}

    def _notify(self) -> None:
        self._changed.set()

    async def wait_full(self, timeout: float) -> bool:
        """Wait until every type has N live dedicated workers, all free; False on timeout."""
        return await wait_settled(
            self._changed, lambda: all(len(self.free.get(g, [])) >= n for g, n in self.sizes.items()), timeout)


def pool_usage(ledger, now: float | None = None) -> dict:
    """Seconds and dollars per pool and GPU type, from the ledger (every second is one pool's).

    worker_s: the workers' lifetimes (request to stop, or to now); busy_s: their cells' cold start +
    run; idle_s: the rest; images: the same counts per worker image (images.py; a row older than the
    image column counts as ``default``).  The dedicated pool is billed for worker_s at the dedicated hourly price
    (busy or not); serverless figures are the per-second price x busy seconds (keep-warm idle is the
    sessions' and is shown by the kernel's cost summary)."""
    now = time.time() if now is None else now
    rows = ledger.query(
        "SELECT w.pool, w.gpu, w.id, w.requested, w.stopped, "
        "COALESCE((SELECT SUM(COALESCE(c.run_s, 0) + COALESCE(c.cold_start_s, 0)) FROM cells c WHERE c.worker = w.id), 0), "
        "(SELECT COUNT(*) FROM cells c WHERE c.worker = w.id), w.image FROM workers w WHERE w.pool IS NOT NULL") or []
    out: dict = {}
    for pool, gpu, _wid, requested, stopped, busy, cells, image in rows:
        e = out.setdefault(pool, {}).setdefault(gpu, {"workers": 0, "cells": 0, "worker_s": 0.0, "busy_s": 0.0,
                                                       "images": {}})
        i = e["images"].setdefault(image or "default", {"workers": 0, "cells": 0, "worker_s": 0.0, "busy_s": 0.0})
        for d in (e, i):
            d["workers"] += 1
            d["cells"] += cells
            d["worker_s"] += max(0.0, (stopped or now) - requested)
            d["busy_s"] += busy or 0.0
    for pool, by_gpu in out.items():
        for gpu, e in by_gpu.items():
            e["idle_s"] = max(0.0, e["worker_s"] - e["busy_s"])
            p = price_for(gpu)
            if pool == DEDICATED:
                e["cost_usd"] = e["worker_s"] * p.dedicated_per_h / 3600.0
                e["price"] = {"dedicated_per_h": p.dedicated_per_h, "provider": p.dedicated_provider,
                              "as_of": p.dedicated_as_of}
            else:
                e["cost_usd"] = e["busy_s"] * p.serverless_per_s
                e["price"] = {"serverless_per_s": p.serverless_per_s, "provider": p.serverless_provider,
                              "as_of": p.serverless_as_of}
    return out
