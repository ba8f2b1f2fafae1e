"""`%%gpu --max-cost USD`: stop a running cell once what it is billed passes the limit.

There is no honest estimate of what an unseen cell will cost, so nothing is refused before it
starts (the backend's session and user budgets do that, on known spend: see
``jupyter_gpu_backend/accounting/budgets.py``).  While the cell waits and runs, its billed cost is counted as
the serverless price x the time since it was sent, less the time it spent queued (never billed);
the cold start counts too unless the price's profile does not bill it - then the count is an
upper bound, so the cell is never allowed past its limit.  Past the limit the cell is interrupted,
exactly like the stop button, with a message naming the figure and the limit, and again each second
while it still runs (an interrupt that lands during the cold start finds no code to stop).
"""
from __future__ import annotations


from jupyter_gpu.cost.pricing import price_for
from jupyter_gpu._wire import settings

RESEND = 1.0  # seconds between interrupts while a cell past its limit keeps running
RUN_BUDGET_ENV = settings.RUN_BUDGET.name  # USD that `jupyter-gpu run --max-cost` left this kernel


class CellBudget:
    def __init__(self, max_cost: float, gpu: str, t0: float):
        price = price_for(gpu)
        self.max_cost, self.per_s, self.t0 = max_cost, price.serverless_per_s, t0
        self.gpu, self.provider, self.as_of = gpu, price.serverless_provider, price.serverless_as_of
        self.queued_since: float | None = None
        self.queued = 0.0
        self.fired: float | None = None  # when the limit was passed
        self.last_sent = 0.0

    @classmethod
    def for_cell(cls, max_cost: float | None, gpu: str, t0: float) -> "CellBudget | None":
        return cls(max_cost, gpu, t0) if max_cost is not None else None

    def note(self) -> str | None:
        """Said once at the start when the limit cannot bite."""
        if self.per_s <= 0:
            return f"jupyter-gpu: --max-cost ${self.max_cost:g} has no effect: no price is configured for {self.gpu}\n"
        return None

    def phase(self, name: str, now: float) -> None:
        if name == "queued" and self.queued_since is None:
            self.queued_since = now
        elif name != "queued" and self.queued_since is not None:
            self.queued += now - self.queued_since
            self.queued_since = None

    def billed(self, now: float) -> float:
        waiting = self.queued + (now - self.queued_since if self.queued_since is not None else 0.0)
        return max(0.0, now - self.t0 - waiting) * self.per_s

    def deadline(self) -> float | None:
        """When (time.monotonic()) the billed cost passes the limit if the cell runs on unqueued
        (when it did, once it has); None where it cannot (no price)."""
        if self.fired is not None:
            return self.fired
        if self.per_s <= 0:
            return None
        return self.t0 + self.queued + self.max_cost / self.per_s + 0.001  # just past it

    def again(self, now: float) -> bool:
        """Interrupt again, each second, while a cell past its limit still runs: an interrupt that
        arrives during the cold start finds nothing to interrupt yet (never a kill: that is the
        second stop-button press, and would lose the worker's namespace)."""
        if self.fired is None or now - self.last_sent < RESEND:
            return False
        self.last_sent = now
        return True

    def exceeded(self, now: float) -> str | None:
        """The message to show, once, when the billed cost has passed the limit."""
        if self.fired is not None or self.per_s <= 0:
            return None
        spent = self.billed(now)
        if spent <= self.max_cost:
            return None
        self.fired = self.last_sent = now
        return (f"jupyter-gpu: stopping the cell: it has been billed ${spent:.6f} on {self.gpu}, past --max-cost "
                f"${self.max_cost:g} ({self.provider} ${self.per_s:.6f}/s, {self.as_of or 'undated'})\n")


def run_limit(own: float | None, gpu: str, spent: float) -> float | None:
    """A cell's limit under `jupyter-gpu run --max-cost`: what the run left this kernel
    (``$JUPYTER_GPU_RUN_BUDGET``) less what its cells have cost (``spent``, USD), or the cell's own
    --max-cost if smaller.  Not applied on a device without a price: it could not bite, only say
    so in every cell."""
    left = settings.RUN_BUDGET.get()
    if not left or price_for(gpu).serverless_per_s <= 0:
        return own
    left = max(0.0, float(left) - spent)
    return left if own is None else min(own, left)
