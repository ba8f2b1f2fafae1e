"""Session and user budgets: a cell is refused before it starts once known spend reached the limit.

``jupyter-gpu serve --session-budget USD --user-budget USD --budget-warn 0.8``.  Spend is what the
backend saw billed: each finished cell's billed seconds (cold start per the price profile + run, see
``jupyter_gpu.cost.billing``) x the serverless price of its GPU type in this backend's catalog, counted per
session and per user since the backend started.  The next cell's cost is unknown, so the check is on
known spend: at or past a limit the cell is refused with the figure and the limit (the session stays
open, `%gpu` commands and local cells keep working); past ``warn`` x a limit the cell runs and its
output starts with a warning.  Keep-warm idle is not counted here (the kernel's `%gpu cost` shows it).

The hook: ``Budgets.wrap(ledger)`` sees every cell start and finish recorded (scheduling/lifecycle.py), and the
kernel websocket (``api/kernels.py``) calls ``check`` before it starts a cell.
"""
from __future__ import annotations

from jupyter_gpu.cost import billing
from jupyter_gpu.errors import BudgetExceeded
from jupyter_gpu.cost.pricing import price_for


class Budgets:
    def __init__(self, session_budget: float | None = None, user_budget: float | None = None, warn: float = 0.8):
        self.limits = {"session": session_budget, "user": user_budget}
        self.warn = warn
        self.spent: dict = {}  # ("session", id) / ("user", name) -> USD
        self._cells: dict = {}  # cell id -> (session, user, gpu) while it runs
        self._pools: dict = {}  # cell id -> "dedicated" for a cell on the dedicated pool (hybrid pools)

    @classmethod
    def attach(cls, config, scheduler) -> "Budgets | None":
        """From the backend's config; charges through the scheduler's ledger.  None when no limit is set."""
        b = cls(getattr(config, "session_budget", None), getattr(config, "user_budget", None),
                getattr(config, "budget_warn", 0.8))
        if not b.active:
            return None
        scheduler.ledger = b.wrap(scheduler.ledger)
        return b

    @property
    def active(self) -> bool:
        return any(v is not None for v in self.limits.values())

    def _scopes(self, session: str, user: str):
        return (("session", session), ("user", user))

    def check(self, session: str, user: str) -> str | None:
        """Raise BudgetExceeded when a limit is reached; return a warning line past the warn threshold."""
        warnings = []
        for scope in self._scopes(session, user):
            limit = self.limits[scope[0]]
            if limit is None:
                continue
            spent = self.spent.get(scope, 0.0)
            who = "this session" if scope[0] == "session" else f"user {user}"
            if spent >= limit:
                raise BudgetExceeded(
                    f"{scope[0]} budget reached: {who} has spent ${spent:.6f} of ${limit:g}; the cell was not "
                    f"started (the backend's --{scope[0]}-budget; local cells and %gpu commands still work)")
            if spent >= self.warn * limit:
                warnings.append(f"{who} has spent ${spent:.6f} of its ${limit:g} {scope[0]} budget "
                                f"({spent / limit:.0%}, warning from {self.warn:.0%})")
        return ("jupyter-gpu: budget warning: " + "; ".join(warnings) + "\n") if warnings else None

    def charge(self, session: str, user: str, gpu: str, timings: dict, pool: str | None = None) -> float:
        # a cell on the dedicated pool is charged its share of the hourly price, not serverless seconds
        usd = billing.cell(timings, price_for(gpu).as_dict(), pool)["cost_usd"]
        for scope in self._scopes(session, user):
            self.spent[scope] = self.spent.get(scope, 0.0) + usd
        return usd

    def status(self, session: str, user: str) -> dict:
        return {scope[0]: {"spent_usd": self.spent.get(scope, 0.0), "limit_usd": self.limits[scope[0]]}
                for scope in self._scopes(session, user)}

    def wrap(self, ledger):
        """A ledger that also charges this budget when a cell finishes."""
        return _ChargingLedger(ledger, self)


class _ChargingLedger:
    def __init__(self, ledger, budgets: Budgets):
        self._ledger, self._budgets = ledger, budgets

    def __getattr__(self, name):
        return getattr(self._ledger, name)

    def cell_started(self, cid, session, user, gpu, *args, **kw):
        self._budgets._cells[cid] = (session, user, gpu)
        return self._ledger.cell_started(cid, session, user, gpu, *args, **kw)

    def cell_pool(self, cid, pool):
        self._budgets._pools[cid] = pool  # the scheduler says it before cell_done
        return self._ledger.cell_pool(cid, pool)

    def cell_done(self, cid, status, worker, cold, timings, *args, **kw):
        # a lane cell is dated back (``at=``): whatever the ledger takes passes through
        who = self._budgets._cells.pop(cid, None)
        pool = self._budgets._pools.pop(cid, None)
        if who is not None:
            self._budgets.charge(*who, timings or {}, pool)
        return self._ledger.cell_done(cid, status, worker, cold, timings, *args, **kw)
