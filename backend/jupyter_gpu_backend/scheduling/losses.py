"""Workers that end unasked: one that stops answering (``hung``), one whose connection dropped
(``worker_resumes``, ``unsent``), and one that is gone (``worker_gone``): its cell fails with the
cause, its lease and slot are freed, and what the runtime holds for it is released.  The
scheduler's collaborator (scheduler.py); ``api/workers.py`` calls it as a worker's connection ends."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from jupyter_gpu._wire import messages

from jupyter_gpu_backend.scheduling.model import LOST_NOTE, Worker

if TYPE_CHECKING:
    from jupyter_gpu_backend.scheduling.scheduler import Scheduler

log = logging.getLogger("jupyter_gpu_backend")
GONE_KEPT = 256  # workers remembered after they are gone, so a kernel's lane_lost can be answered


class Losses:
    def __init__(self, scheduler: Scheduler):
        self.s = scheduler
        self._reaping: set = set()  # runtime.stop of gone workers, under way

    def _reap(self, handle) -> None:
        """Free what the runtime holds for a worker that is gone (also after stop_worker: stop is idempotent)."""
        async def reap():
            try:
                await self.s.runtime.stop(handle, grace=0.5)
            except Exception as e:
                log.warning("could not release the runtime's hold on a gone worker: %s", e)
        task = asyncio.ensure_future(reap())
        self._reaping.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._reaping.discard)

    def hung(self, worker: Worker, bound: float) -> None:
        """``worker`` sent nothing, not even a heartbeat, for ``bound`` seconds (api/workers.py): its
        process is there but answers nothing.  It is killed; its connection's end fails its cell."""
        worker.hung = (f"it stopped answering (no heartbeat for {bound:g} s, --worker-heartbeat: its process was "
                       f"stopped or stuck), so it was killed")
        log.warning("worker %s sent nothing for %g s: killing it", worker.id, bound)
        if worker.handle is not None:
            self.s.runtime.kill(worker.handle)

    async def worker_resumes(self, worker: Worker, grace: float) -> bool:
        """``worker``'s connection dropped while its process lives on: wait up to ``grace`` seconds
        for it to resume (api/workers.py); False when it exits first, or does not come back."""
        handle = worker.handle
        if handle is None or handle.exited.done() or worker.stopping or worker.retired or worker.hung:
            return False
        worker.resumed = asyncio.get_running_loop().create_future()
        done, _ = await asyncio.wait([worker.resumed, asyncio.ensure_future(asyncio.shield(handle.exited))],
                                     timeout=grace, return_when=asyncio.FIRST_COMPLETED)
        return worker.resumed in done

    async def worker_gone(self, worker: Worker) -> None:
        """The worker's connection closed: fail its cell (with the cause) and drop its lease."""
        try:
            await self._worker_gone(worker)
        finally:
            worker.gone.set()

    async def _worker_gone(self, worker: Worker) -> None:
        if worker.conn is not None:
            worker.conn.open = False
        if worker.reported is not None and not worker.reported.done():
            worker.reported.set_result(None)  # nothing more will come: the status need not wait
        self.s.workers.pop(worker.id, None)
        self.s.gone[worker.id] = worker
        while len(self.s.gone) > GONE_KEPT:
            self.s.gone.pop(next(iter(self.s.gone)))
        self.s.release_slot(worker)
        run, worker.cell = worker.cell, None
        session = worker.session
        if session is not None:
            lease = session.leases.get(worker.key)
            if lease is not None and lease.worker is worker:
                if lease.expiry is not None:
                    lease.expiry.cancel()
                session.leases.pop(worker.key, None)
                self.s.demand_changed(worker.key)
        self.s.spares.discard(worker)
        self.s.dedicated.recycle(worker)
        cause = worker.exit_cause = worker.hung or (
            await self.s.runtime.exit_cause(worker.handle) if worker.handle else "unknown")
        if not (worker.stopping or worker.retired):  # an unexpected end: the backend's log says why
            log.info("worker %s (session %s) is gone: %s", worker.id, session.id if session else None,
                     worker.killed_reason or cause)
        if worker.handle is not None:  # a Ray actor holds its CPUs/GPUs until killed, even with its worker dead
            self._reap(worker.handle)
        for cell in self.s.lane_cells.unmetered(worker):  # never `metered`: lost even if its kernel never asks
            self.s.lifecycle.lane_lost(worker, cell, worker.loss()[0], announced=True)
        if run is None:
            if worker.retired:
                self.s.ledger.worker_state(worker.id, "stopped")
            elif not worker.stopping:  # it died between cells, or in a lane cell (the kernel asks: lane_lost)
                self.s.ledger.worker_state(worker.id, "lost", cause=worker.killed_reason or cause)
            return
        status, what = worker.loss()
        self.s.ledger.worker_state(worker.id, "lost", cause=what)
        timings = {"queue": run.queue, "cold_start": run.cold_start, "run": time.monotonic() - run.t_dispatch}
        self.s.lifecycle.done(run, worker, status, timings)
        await run.session.emit(
            {
                "type": messages.ERROR,
                "cell": run.id,
                "ename": "WorkerLost",
                "evalue": f"{what}. {LOST_NOTE}",
                "traceback": [],
            }
        )
        await run.session.emit(messages.done(run.id, status, timings, worker=worker.id, gpu=worker.gpu,
                                             device=worker.device, cold=run.cold, pool=worker.pool,
                                             image=worker.image))

    async def unsent(self, worker: Worker) -> None:
        """``worker`` resumed its connection without the cell it was sent (lost in the drop): that
        cell fails, saying so; the worker, and its namespace, stay."""
        run, worker.cell = worker.cell, None
        timings = {"queue": run.queue, "cold_start": run.cold_start, "run": time.monotonic() - run.t_dispatch}
        self.s.lifecycle.done(run, worker, "error", timings)
        await run.session.emit({"type": messages.ERROR, "cell": run.id, "ename": "WorkerLost", "traceback": [],
                                "evalue": "the connection to its worker dropped while the cell was sent: it did not run "
                                          "(the worker and its values are there: run the cell again)"})
        await run.session.emit(messages.done(run.id, "error", timings, worker=worker.id, gpu=worker.gpu,
                                             device=worker.device, cold=run.cold, pool=worker.pool, image=worker.image))
        self.s.idle(run.session.leases.get(run.key))
