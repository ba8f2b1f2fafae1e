"""A cell's life in the ledger: the one place that writes its rows, one method a lifecycle step.

A cell the backend relays is ``queued`` (it waits for a worker: a cold start or the max_workers
line) or ``started`` (a warm worker takes it at once), then ``running``, and ends once: ``done``
(what its worker said, or lost or killed with its worker), ``failed`` (no worker could be had) or
``interrupted`` (stopped before it started).  A lane cell (``jupyter_gpu/_wire/lane.py``) goes from
the kernel straight to its worker, which reports it: ``lane_started`` (it still runs after 20 ms),
``lane_metered`` (it ran), or ``lane_lost`` (it died with its worker).

The ledger is read at each write (``ledger_of``): budgets wrap the scheduler's ledger after it is
built.  A cell's pool is written before its end, as budgets charge by pool.

A cell's row is keyed by (session, cell) (``model.row_id``), never by the id its kernel chose alone:
another user's cell with the same id has a row of its own.  A relayed cell is in its session's
``cells`` from ``Scheduler.begin`` until it ends here (``done``, ``failed``, ``interrupted``).
"""
from __future__ import annotations

from typing import Callable

from jupyter_gpu_backend.scheduling.model import CellRun, Worker, row_id


class CellLifecycle:
    def __init__(self, ledger_of: Callable):
        self.ledger_of = ledger_of

    # -- relayed by the backend ----------------------------------------------------------------
    def queued(self, run: CellRun) -> None:
        """It waits for a worker (cold start, or in the max_workers line)."""
        self._begin(run, "queued")

    def started(self, run: CellRun) -> None:
        """A warm worker takes it now."""
        self._begin(run, "running")

    def running(self, run: CellRun) -> None:
        """Its worker is there (after a cold start or the line)."""
        self.ledger_of().cell_running(run.row)

    def failed(self, run: CellRun) -> None:
        """No worker could be had for it."""
        self.ledger_of().cell_done(run.row, "failed", None, True, {"queue": run.queue})
        ended(run)

    def interrupted(self, run: CellRun, timings: dict) -> None:
        """Stopped before it started (in the line, or while its worker was starting)."""
        self.ledger_of().cell_done(run.row, "interrupted", None, run.cold, timings)
        ended(run)

    def done(self, run: CellRun, worker: Worker, status: str, timings: dict) -> None:
        """It ended on ``worker``: with the status the worker said, or lost or killed with it."""
        ledger = self.ledger_of()
        ledger.cell_pool(run.row, worker.pool)  # before cell_done: budgets charge by pool
        ledger.cell_done(run.row, status, worker.id, run.cold, timings)
        ended(run)

    def _begin(self, run: CellRun, status: str) -> None:
        ledger = self.ledger_of()
        row = run.row
        ledger.cell_started(row, run.session.id, run.session.user, run.gpu, status=status)
        ledger.cell_image(row, run.image)
        if run.function:
            ledger.cell_function(row, run.function)

    # -- lane cells: reported by their worker ----------------------------------------------------
    def lane_started(self, worker: Worker, cell: str) -> None:
        """A lane cell still runs after 20 ms (``started``)."""
        ledger, row = self.ledger_of(), row_id(worker.session.id, cell)
        ledger.cell_started(row, worker.session.id, worker.session.user, worker.gpu)
        ledger.cell_image(row, worker.image)

    def lane_metered(self, worker: Worker, cell: str, status: str, timings: dict, ended: float,
                     submitted: float | None, function: str | None = None) -> None:
        """A lane cell ran and ended at ``ended`` (``metered``); ``submitted``: when it began, for
        a cell never announced by ``started`` (None when it was)."""
        ledger, row = self.ledger_of(), row_id(worker.session.id, cell)
        if submitted is not None:
            ledger.cell_started(row, worker.session.id, worker.session.user, worker.gpu, at=submitted)
        ledger.cell_pool(row, worker.pool)
        ledger.cell_done(row, status, worker.id, False, timings, at=ended)
        ledger.cell_image(row, worker.image)
        if function:
            ledger.cell_function(row, function)

    def lane_lost(self, worker: Worker, cell: str, status: str, announced: bool) -> None:
        """A lane cell died with its worker; one it never announced is recorded whole."""
        if not announced:
            self.lane_started(worker, cell)
        ledger, row = self.ledger_of(), row_id(worker.session.id, cell)
        ledger.cell_pool(row, worker.pool)
        ledger.cell_done(row, status, worker.id, False, {})


    def lane_lost_unseen(self, session, cell: str, gpu: str, worker: str) -> None:
        """A lane cell of a worker this backend never had (its predecessor's, which went with it)."""
        self.ledger_of().cell_lost_unseen(row_id(session.id, cell), session.id, session.user, gpu, worker)


def ended(run: CellRun) -> None:
    """The cell's id is free again in its session (``Session.cells``)."""
    cells = run.session.cells
    if cells.get(run.id) is run:
        del cells[run.id]
