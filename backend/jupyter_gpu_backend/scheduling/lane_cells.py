"""The backend's side of lane cells (``jupyter_gpu/_wire/lane.py``): a worker's reports of the
cells that went straight from a kernel to it (``started``, ``metered``, ``retired``), and a kernel's
question when its lane broke mid-cell (``lane_lost``).  The scheduler's collaborator: the cells'
rows go through its ``CellLifecycle``, the keep-warm windows through its ``idle``, and the workers asked
about are its live or recently gone ones.  Before a kernel is told its status, the reports a worker
still owes are asked for (``report``)."""
from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING

from jupyter_gpu._wire import messages

from jupyter_gpu_backend.scheduling.model import LOST_NOTE, MAX_KEEP_WARM, Session, Worker

# how far before what ``ended_ago`` says a worker's clock may date a cell: transit, not skew
CLOCK_SLACK = 0.5

if TYPE_CHECKING:
    from jupyter_gpu_backend.scheduling.scheduler import Scheduler

REPORT_WAIT = 0.5  # s: a kernel's status waits this long for its workers' owed reports


class LaneCells:
    def __init__(self, scheduler: "Scheduler"):
        self.scheduler = scheduler
        # worker id -> the lane cells it announced (`started`) and has not metered: their rows are
        # `running` until then, and lost with the worker (a worker whose user's code sends its own
        # `started`s could leave rows `running` for good otherwise; issue 25)
        self.announced: dict[str, set[str]] = {}

    def report(self, worker: Worker, header: dict) -> None:
        """A lane cell began (``started``: the worker is busy, keep-warm paused) or ran
        (``metered``: ledger it and restart the keep-warm window); or the worker is retiring (an
        expected exit)."""
        session = worker.session
        if header["type"] == messages.RETIRED:
            worker.stopping = worker.retired = True
            self.scheduler.ledger.worker_state(worker.id, "stopping")
            return
        if session is None:
            return
        cell = header.get("cell")
        if not cell or not isinstance(cell, str):  # a worker's report names its cell
            return
        self.scheduler.runtime.cells_seen()
        lease = session.leases.get(worker.key)
        if header["type"] == messages.STARTED:
            worker.lane_cell = cell
            self.announced.setdefault(worker.id, set()).add(cell)
            self.scheduler.lifecycle.lane_started(worker, cell)
            if lease is not None and lease.worker is worker:
                if lease.expiry is not None:
                    lease.expiry.cancel()
                    lease.expiry = None
                lease.idle_since = None
            return
        status = str(header.get("status", "ok"))
        if status != "resend":  # a resend ran nothing (the worker does not count it either)
            worker.cells += 1
        timings = header.get("timings", {})
        # the worker reports a short cell only after it ended, once idle: date it back
        now = time.time()
        ended = ended_at(now, header.get("ended_ago"), timings.get("ended_at"))
        ago = now - ended
        # a short cell, never announced (`started`), began its run before it ended
        submitted = ended - max(0.0, _number(timings.get("run"))) if worker.lane_cell != cell else None
        worker.lane_cell = None
        self.announced.get(worker.id, set()).discard(cell)
        function = header.get("function")
        self.scheduler.lifecycle.lane_metered(worker, cell, status, timings, ended, submitted,
                                              str(function)[:200] if function else None)
        if lease is not None and lease.worker is worker:
            kw = header.get("keep_warm")  # the latest cell's --keep-warm wins, if a worker's report is sane
            if kw is not None and _number(kw) == kw and 0.0 <= kw <= max(MAX_KEEP_WARM, self.scheduler.keep_warm):
                lease.keep_warm = float(kw)
            self.scheduler.idle(lease, ago)

    def unmetered(self, worker: Worker) -> list[str]:
        """The lane cells ``worker`` (gone) announced and never metered: they died with it."""
        return sorted(self.announced.pop(worker.id, ()))

    async def settle(self, session: Session) -> None:
        """Before a kernel is told about its workers: one that looks busy with a lane cell is
        asked for the reports it owes (a long cell that ended under METER_IDLE ago is metered
        only then), so `%gpu status` run right after such a cell shows the worker idle, with its
        keep-warm window counting from the cell's end.  A cell still running keeps it busy."""
        waits = []
        for lease in session.leases.values():
            w = lease.worker
            if w.lane_cell is not None and w.cell is None and w.conn is not None and w.conn.open:
                if w.reported is None or w.reported.done():  # else: asked already, the answer serves both
                    w.reported = asyncio.get_running_loop().create_future()
                    await w.conn.send({"type": messages.REPORT})
                waits.append(w.reported)
        if waits:
            await asyncio.wait(waits, timeout=REPORT_WAIT)

    async def lost(self, session: Session, header: dict) -> dict:
        """A kernel's lane broke in the middle of a cell: did the cell run (and die with its
        worker), or had the worker retired before reading it (then the kernel goes through us)?"""
        wid = header.get("worker")
        worker = self.scheduler.workers.get(wid) or self.scheduler.gone.get(wid)
        reply = {"type": messages.LANE_LOST_REPLY, "cell": header.get("cell"), "ran": False}
        if worker is None and isinstance(wid, str) and wid:
            # a worker this backend never had: it restarted while the cell ran on its predecessor's
            # worker (which does not outlive its backend).  The cell may have run, part way: "it never
            # began" would send it again, and code that had begun would run twice.
            gpu = header.get("gpu") or ""
            self.scheduler.lifecycle.lane_lost_unseen(session, str(header.get("cell", "")), gpu, wid[:64])
            return {**reply, "ran": True, "status": "lost", "gpu": gpu, "device": gpu,
                    "message": f"worker {wid[:64]} is unknown to this backend: it restarted while the cell ran "
                               f"there, and the worker went with it: the cell was cut off. {LOST_NOTE}"}
        if worker is None or worker.session is not session:
            return reply
        try:
            await asyncio.wait_for(worker.gone.wait(), 5.0)
        except asyncio.TimeoutError:
            return reply  # the worker lives: only the lane broke, and nothing ran on it
        if worker.stopping and not worker.killed_reason:
            return reply  # retired or stopped between cells: the cell never started
        status, what = worker.loss()
        cell = str(header.get("cell", ""))
        if worker.lane_cell != cell:  # it died before announcing the cell (worker_gone recorded an announced one)
            self.scheduler.lifecycle.lane_lost(worker, cell, status, announced=False)
        return {**reply, "ran": True, "status": status, "message": f"{what}. {LOST_NOTE}", "device": worker.device,
                "gpu": worker.gpu}


def ended_at(now: float, ago, worker_clock) -> float:
    """When a reported lane cell ended, on this clock: ``now`` less the worker's ``ended_ago``, which
    is late by the report's time in transit (it waited 18 ms in a busy backend's loop under a CI
    run's load), so the worker's own clock (``worker_clock``, its ``ended_at``) where it falls
    within ``CLOCK_SLACK`` before that: a worker on this host, or one whose clock agrees.  A clock
    far off (a skewed remote node, a forged report) is ignored, and nothing is dated later than
    the report allows."""
    latest = now - max(0.0, _number(ago))
    at = _number(worker_clock)
    return at if latest - CLOCK_SLACK <= at <= latest else latest


def _number(x) -> float:
    """A number a worker reported, or 0 for anything else (a worker's report is not trusted blindly)."""
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    return float(x) if ok else 0.0
