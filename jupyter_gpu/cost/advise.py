"""`jupyter-gpu advise`: replay a measured cell trace against serverless / dedicated / hybrid scenarios.

Pure logic.  A trace is a list of requests ``{"t": arrival (s), "run": service (s), "gpu": type}``,
taken from saved footers (arrival = when the kernel started the cell, service = the measured run
phase) or from the backend's ``GET /api/cells`` ledger JSON (``submitted``, ``run_s``).  It is
replayed open-loop: arrivals stay where they were measured, whatever the scenario does to waits.

Scenarios, per GPU type:
- ``serverless:K``: a worker per request in flight; a request takes a worker idle for less than K
  seconds, else cold-starts one (the trace's median measured cold start, or ``cold_start``); a
  worker is billed from its start to K after its last request (cold start per the profile).
- ``dedicated:N``: N GPUs billed from the first arrival to the last finish; requests queue FIFO.
- ``hybrid:N:K``: N dedicated GPUs first; a request that finds them all busy bursts to serverless:K.
Results: cost, cold-start count, p95 wait (queue + cold start; nearest rank).
"""
from __future__ import annotations

import heapq
import math

from jupyter_gpu.cost.billing import round_billed


def trace_from_footers(records: list[dict]) -> list[dict]:
    out = []
    for r in records:
        t = r.get("timings", {})
        out.append({"t": r.get("started_at", 0.0), "run": t.get("run", 0.0), "gpu": r.get("gpu") or "cpu",
                    "cold_start": t.get("cold_start", 0.0) if r.get("cold") else None, "price": r.get("price")})
    return sorted(out, key=lambda x: x["t"])


def trace_from_ledger(doc: dict) -> list[dict]:
    """``GET /api/cells`` JSON -> trace (cells that never ran are skipped)."""
    out = []
    for c in doc.get("cells", []):
        if c.get("run_s") is None or c.get("submitted") is None:
            continue
        out.append({"t": float(c["submitted"]), "run": float(c["run_s"]), "gpu": c.get("gpu") or "cpu",
                    "cold_start": float(c["cold_start_s"]) if c.get("cold") and c.get("cold_start_s") else None,
                    "price": None})
    return sorted(out, key=lambda x: x["t"])


def p95(xs: list[float]) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]


def median_cold_start(trace: list[dict]) -> float | None:
    cs = sorted(x["cold_start"] for x in trace if x.get("cold_start"))
    if not cs:
        return None
    n = len(cs)
    return cs[n // 2] if n % 2 else (cs[n // 2 - 1] + cs[n // 2]) / 2


class _Serverless:
    """Autoscaled workers with keep-warm ``k``: warm reuse, else a cold start."""

    def __init__(self, k: float, cold: float, price: dict):
        self.k, self.cold, self.price = k, cold, price
        self.workers: list[dict] = []  # {"start", "free_at", "last"}
        self.cold_starts = 0

    def serve(self, t: float, run: float) -> float:
        """Serve a request arriving at ``t``; returns its wait."""
        warm = [w for w in self.workers if w["free_at"] <= t and t - w["free_at"] < self.k]
        if warm:
            w = max(warm, key=lambda w: w["free_at"])  # the most recently used stays warm longest
            w["free_at"] = t + run
            return 0.0
        self.cold_starts += 1
        self.workers.append({"start": t, "free_at": t + self.cold + run})
        return self.cold

    def billed_seconds(self) -> float:
        prof = self.price.get("profile") or {}
        gran, minimum = self.price.get("granularity_s", 1.0), self.price.get("minimum_s", 0.0)
        total = 0.0
        for w in self.workers:
            life = w["free_at"] + (self.k if prof.get("bills_keep_warm", True) else 0.0) - w["start"]
            if not prof.get("bills_cold_start", True):
                life -= self.cold
            total += round_billed(life, gran, minimum)
        return total

    def cost(self) -> float:
        return self.billed_seconds() * self.price.get("serverless_per_s", 0.0)


def _dedicated_cost(n: int, start: float, end: float, price: dict) -> float:
    if n <= 0:
        return 0.0
    billed = round_billed(end - start, price.get("dedicated_granularity_s", 1.0), price.get("dedicated_minimum_s", 0.0))
    return n * billed * price.get("dedicated_per_h", 0.0) / 3600.0


def replay(trace: list[dict], scenario: dict, price: dict, cold_start: float) -> dict:
    """One scenario ``{"kind": "serverless"|"dedicated"|"hybrid", "n": N, "keep_warm": K}`` over ``trace``."""
    kind, n, k = scenario["kind"], scenario.get("n", 0), scenario.get("keep_warm", 0.0)
    sl = _Serverless(k, cold_start, price) if kind in ("serverless", "hybrid") else None
    free = [0.0] * (n if kind in ("dedicated", "hybrid") else 0)  # when each dedicated GPU is next free
    heapq.heapify(free)
    waits, ends = [], []
    for x in trace:
        t, run = x["t"], x["run"]
        if kind == "serverless":
            w = sl.serve(t, run)
        elif free and (kind == "dedicated" or free[0] <= t):
            begin = max(t, heapq.heappop(free))
            heapq.heappush(free, begin + run)
            w = begin - t
        else:  # hybrid: every dedicated GPU busy -> serverless burst
            w = sl.serve(t, run)
        waits.append(w)
        ends.append(t + w + run)
    start = trace[0]["t"] if trace else 0.0
    end = max(ends, default=start)
    dedicated = _dedicated_cost(len(free), start, end, price)
    serverless = sl.cost() if sl else 0.0
    return {
        "scenario": label(scenario),
        "cost_usd": dedicated + serverless,
        "dedicated_usd": dedicated,
        "serverless_usd": serverless,
        "cold_starts": sl.cold_starts if sl else 0,
        "p95_wait_s": p95(waits),
        "mean_wait_s": sum(waits) / len(waits) if waits else 0.0,
        "requests": len(trace),
    }


def label(s: dict) -> str:
    if s["kind"] == "serverless":
        return f"serverless, keep-warm {s['keep_warm']:g} s"
    if s["kind"] == "dedicated":
        return f"dedicated x{s['n']}"
    return f"hybrid: dedicated x{s['n']} + serverless burst (keep-warm {s['keep_warm']:g} s)"


def parse_scenario(text: str) -> dict:
    """``serverless:300``, ``dedicated:2``, ``hybrid:1:60``."""
    parts = text.split(":")
    try:
        if parts[0] == "serverless" and len(parts) == 2:
            return {"kind": "serverless", "keep_warm": float(parts[1])}
        if parts[0] == "dedicated" and len(parts) == 2 and int(parts[1]) >= 1:
            return {"kind": "dedicated", "n": int(parts[1])}
        if parts[0] == "hybrid" and len(parts) == 3:
            return {"kind": "hybrid", "n": int(parts[1]), "keep_warm": float(parts[2])}
    except ValueError:
        pass
    raise ValueError(f"not a scenario: {text!r} (use serverless:K, dedicated:N or hybrid:N:K; K in seconds)")


DEFAULT_SCENARIOS = ["serverless:0", "serverless:60", "serverless:300", "dedicated:1", "dedicated:2", "hybrid:1:60"]


def advise(trace: list[dict], scenarios: list[dict], price_of, cold_start: float | None = None) -> dict:
    """Every scenario for every GPU type in ``trace``.  ``price_of(gpu) -> price dict`` is used where
    the trace carries no price (ledger traces)."""
    out = {"gpus": {}}
    for gpu in sorted({x["gpu"] for x in trace}):
        sub = [x for x in trace if x["gpu"] == gpu]
        price = next((x["price"] for x in sub if x.get("price")), None) or price_of(gpu)
        measured = median_cold_start(sub)
        cs = cold_start if cold_start is not None else (measured if measured is not None else 0.0)
        out["gpus"][gpu] = {
            "price": price,
            "cold_start_s": cs,
            "cold_start_from": "given" if cold_start is not None else "measured median" if measured is not None else
            "none measured (0 s)",
            "requests": len(sub),
            "span_s": max(x["t"] + x["run"] for x in sub) - sub[0]["t"],
            "results": [replay(sub, s, price, cs) for s in scenarios],
        }
    return out


def to_text(a: dict) -> str:
    lines = []
    for gpu, g in a["gpus"].items():
        p = g["price"]
        lines.append(f"{gpu}: {g['requests']} cells over {g['span_s']:.1f} s; cold start {g['cold_start_s']:.2f} s "
                     f"({g['cold_start_from']}); serverless ${p.get('serverless_per_s', 0):.6f}/s ({p.get('provider')} "
                     f"{p.get('as_of') or 'undated'}), dedicated ${p.get('dedicated_per_h', 0):.3f}/h "
                     f"({p.get('dedicated_provider')} {p.get('dedicated_as_of') or 'undated'})")
        rows = [("scenario", "cost", "cold starts", "p95 wait")]
        best = min(g["results"], key=lambda r: r["cost_usd"])["scenario"] if g["results"] else None
        for r in g["results"]:
            rows.append((r["scenario"] + (" (cheapest)" if r["scenario"] == best else ""),
                         f"${r['cost_usd']:.6f}", str(r["cold_starts"]), f"{r['p95_wait_s']:.2f} s"))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
        lines.append("")
    return "\n".join(lines) or "no cells in the trace"
