"""A cell's ledger rows are written by one class (scheduling/lifecycle.py), one method a lifecycle step,
in the order the ledger and budgets rely on (the pool before the end: budgets charge by pool).  A row
is keyed "session/cell": the kernel's cell id counts only within its session."""
from __future__ import annotations

import asyncio

import pytest

from jupyter_gpu_backend.scheduling.lifecycle import CellLifecycle
from jupyter_gpu_backend.scheduling.model import CellRun, Session, Worker
from jupyter_gpu_backend.scheduling.scheduler import Scheduler
from tests.unit.backend.fakes import FakeRuntime


class Recorder:
    def __init__(self):
        self.rows: list[tuple] = []

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.rows.append((name, args, kwargs))


@pytest.fixture
def world():
    loop = asyncio.new_event_loop()
    session = Session("s-1", "alice")
    worker = Worker("w-1", "cpu", None, loop.create_future(), session=session, pool="dedicated", image="big")
    run = CellRun("c-1", session, "cpu", 0.0, queue=1.5, cold=True, image="big")
    ledger = Recorder()
    yield CellLifecycle(lambda: ledger), ledger, run, worker
    loop.close()


def names(ledger) -> list[str]:
    return [row[0] for row in ledger.rows]


def test_a_cold_cell_is_queued_then_running_then_done(world):
    cells, ledger, run, worker = world
    cells.queued(run)
    cells.running(run)
    cells.done(run, worker, "ok", {"run": 2.0})
    assert ledger.rows == [
        ("cell_started", ("s-1/c-1", "s-1", "alice", "cpu"), {"status": "queued"}),
        ("cell_image", ("s-1/c-1", "big"), {}),
        ("cell_running", ("s-1/c-1",), {}),
        ("cell_pool", ("s-1/c-1", "dedicated"), {}),
        ("cell_done", ("s-1/c-1", "ok", "w-1", True, {"run": 2.0}), {}),
    ]


def test_a_warm_cell_starts_running(world):
    cells, ledger, run, _ = world
    cells.started(run)
    assert ledger.rows[0] == ("cell_started", ("s-1/c-1", "s-1", "alice", "cpu"), {"status": "running"})
    assert names(ledger) == ["cell_started", "cell_image"]


def test_a_cell_that_never_started(world):
    cells, ledger, run, _ = world
    cells.failed(run)
    cells.interrupted(run, {"queue": 1.5, "cold_start": 0.0})
    assert ledger.rows == [
        ("cell_done", ("s-1/c-1", "failed", None, True, {"queue": 1.5}), {}),
        ("cell_done", ("s-1/c-1", "interrupted", None, True, {"queue": 1.5, "cold_start": 0.0}), {}),
    ]


def test_lane_cells_as_their_worker_reports_them(world):
    cells, ledger, _, worker = world
    cells.lane_started(worker, "c-2")
    assert names(ledger) == ["cell_started", "cell_image"]
    ledger.rows.clear()
    cells.lane_metered(worker, "c-2", "ok", {"run": 1.0}, ended=100.0, submitted=None)  # announced
    assert names(ledger) == ["cell_pool", "cell_done", "cell_image"]
    assert ledger.rows[1] == ("cell_done", ("s-1/c-2", "ok", "w-1", False, {"run": 1.0}), {"at": 100.0})
    ledger.rows.clear()
    cells.lane_metered(worker, "c-3", "ok", {"run": 1.0}, ended=100.0, submitted=99.0)  # never announced
    assert names(ledger) == ["cell_started", "cell_pool", "cell_done", "cell_image"]
    assert ledger.rows[0] == ("cell_started", ("s-1/c-3", "s-1", "alice", "cpu"), {"at": 99.0})


def test_a_lane_cell_lost_with_its_worker(world):
    cells, ledger, _, worker = world
    cells.lane_lost(worker, "c-2", "lost", announced=True)
    assert names(ledger) == ["cell_pool", "cell_done"]
    ledger.rows.clear()
    cells.lane_lost(worker, "c-3", "killed", announced=False)  # recorded whole
    assert names(ledger) == ["cell_started", "cell_image", "cell_pool", "cell_done"]
    assert ledger.rows[-1] == ("cell_done", ("s-1/c-3", "killed", "w-1", False, {}), {})


def test_the_ledger_is_read_at_each_write():
    """Budgets wrap the scheduler's ledger after the scheduler (and its CellLifecycle) exist."""
    scheduler = Scheduler(FakeRuntime(), 5.0)
    scheduler.ledger = wrapped = Recorder()
    scheduler.lifecycle.running(CellRun("c-1", Session("s", "u"), "cpu", 0.0))
    assert wrapped.rows == [("cell_running", ("s/c-1",), {})]
