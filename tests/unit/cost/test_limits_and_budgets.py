"""Budget logic, pure: the backend's session/user limits and the kernel's --max-cost counter."""
from __future__ import annotations

import pytest

from jupyter_gpu.cost import pricing
from jupyter_gpu.cost.limit import CellBudget
from jupyter_gpu.errors import BudgetExceeded
from jupyter_gpu_backend.accounting.budgets import Budgets

PRICES = """
[[serverless]]
gpu = "cpu"
provider = "test"
per_s = 0.001
as_of = "2026-11-29"
source = "https://example.org/a-test-price"
profile = "p"

[profiles.p]
bills_cold_start = false
"""


@pytest.fixture(autouse=True)
def priced(tmp_path, monkeypatch):
    f = tmp_path / "prices.toml"
    f.write_text(PRICES)
    monkeypatch.setenv("JUPYTER_GPU_PRICES", str(f))
    pricing.reload()
    yield
    monkeypatch.delenv("JUPYTER_GPU_PRICES")
    pricing.reload()


class FakeLedger:  # the real ledger is SQLite; here only the calls matter
    def __init__(self):
        self.calls = []

    def cell_started(self, *a, **kw):
        self.calls.append(("started", a))

    def cell_done(self, *a, **kw):
        self.calls.append(("done", a, kw) if kw else ("done", a))

    def query(self, sql):
        return "passed through"


def test_session_and_user_limits_warn_then_refuse():
    b = Budgets(session_budget=0.010, user_budget=0.015, warn=0.5)
    ledger = FakeLedger()
    led = b.wrap(ledger)
    assert b.check("s1", "alice") is None
    led.cell_started("c1", "s1", "alice", "cpu")
    # cold start not billed by this profile: 6 s of run = $0.006
    led.cell_done("c1", "ok", "w1", True, {"cold_start": 100.0, "run": 6.0})
    assert [c[0] for c in ledger.calls] == ["started", "done"] and led.query("x") == "passed through"
    assert b.spent[("session", "s1")] == pytest.approx(0.006)
    w = b.check("s1", "alice")
    assert "this session has spent $0.006000 of its $0.01 session budget (60%, warning from 50%)" in w
    led.cell_started("c2", "s1", "alice", "cpu")
    led.cell_done("c2", "ok", "w1", False, {"run": 4.0})  # session at $0.010: reached
    with pytest.raises(BudgetExceeded, match=r"session budget reached: this session has spent \$0.010000 of \$0.01"):
        b.check("s1", "alice")
    # another session of alice: its own budget untouched, the user's at $0.010 of $0.015: a warning
    assert "user alice has spent $0.010000 of its $0.015 user budget" in b.check("s2", "alice")
    led.cell_started("c3", "s2", "alice", "cpu")
    led.cell_done("c3", "ok", "w2", False, {"run": 5.0})
    with pytest.raises(BudgetExceeded, match=r"user budget reached: user alice has spent \$0.015000 of \$0.015"):
        b.check("s2", "alice")
    assert b.check("s3", "bob") is None  # other users are not affected
    assert b.status("s2", "alice")["user"] == {"spent_usd": pytest.approx(0.015), "limit_usd": 0.015}


def test_a_lane_cell_dated_back_is_charged_and_recorded_at_its_end():
    """The worker meters a lane cell after it ended (``at=``, lifecycle.lane_metered): with budgets
    on, the charging ledger must pass that on (it raised TypeError, and the cell went unrecorded)."""
    b = Budgets(session_budget=1.0)
    ledger = FakeLedger()
    led = b.wrap(ledger)
    led.cell_started("lane-1", "s1", "alice", "cpu", at=100.0)
    led.cell_done("lane-1", "ok", "w1", False, {"run": 2.0}, at=102.5)
    assert ledger.calls[-1] == ("done", ("lane-1", "ok", "w1", False, {"run": 2.0}), {"at": 102.5})
    assert b.spent[("session", "s1")] > 0


def test_no_limits_no_budgets():
    class Cfg:
        pass

    class Sched:
        ledger = "the ledger"

    assert Budgets.attach(Cfg(), Sched()) is None and Sched.ledger == "the ledger"


def test_max_cost_counts_unqueued_time_and_fires_once():
    b = CellBudget(0.002, "cpu", t0=100.0)
    assert b.note() is None
    b.phase("queued", 100.0)
    b.phase("cold_start", 110.0)  # 10 s queued: never billed
    assert b.billed(111.5) == pytest.approx(0.0015)
    assert b.exceeded(111.9) is None
    msg = b.exceeded(112.5)  # 2.5 s billed = $0.0025
    assert "billed $0.002500 on cpu, past --max-cost $0.002 (test $0.001000/s, 2026-11-29)" in msg
    assert b.exceeded(113.0) is None  # said once
    assert not b.again(113.0) and b.again(113.6) and not b.again(114.0)  # re-interrupt each second
    assert "no price is configured for Z9" in CellBudget(1.0, "Z9", 0.0).note()
    assert CellBudget.for_cell(None, "cpu", 0.0) is None


def test_the_deadline_is_when_the_billed_cost_passes_the_limit_and_stays_once_passed():
    """What a cell waiting on input() is withdrawn at (_client/driver.py): queued time is not billed, so
    it moves the deadline; once the limit has been passed, the deadline is that moment."""
    b = CellBudget(0.002, "cpu", t0=100.0)  # $0.001/s: 2 s of billed time
    assert b.deadline() == pytest.approx(102.0, abs=0.01)
    b.phase("queued", 100.0)
    b.phase("running", 101.5)  # 1.5 s in the queue, never billed
    assert b.deadline() == pytest.approx(103.5, abs=0.01)
    assert b.exceeded(103.0) is None
    assert "past --max-cost $0.002" in b.exceeded(103.6)
    assert b.deadline() == 103.6
    assert CellBudget(0.002, "Z9", t0=0.0).deadline() is None
