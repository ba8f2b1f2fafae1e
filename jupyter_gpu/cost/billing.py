"""Cost arithmetic, pure: what a cell and a session are billed, serverless vs dedicated, and advice.

Inputs are footer records (what `footer.build` saves in the notebook) and the prices they carry,
so a summary built later from a saved notebook equals the one the kernel shows live.

Billing follows the price's profile (`pricing.Profile`):
- billed phases: cold start (if the profile bills it) + run (load, execution, results) + an
  image's build (only if the profile's ``bills_build``: it runs on the backend's host); the queue
  is never billed; keep-warm idle between cells on the same worker is billed (if the profile bills
  it) to the session.
- rounding: up to a multiple of ``granularity_s`` and at least ``minimum_s``, once per *unit*:
  per cell (unit "cell"), or per worker lifetime (unit "worker", e.g. Modal, RunPod: the session
  total rounds each worker's cold start + runs + idle; a single cell shows its unrounded seconds).
- keep-warm idle is billed to the cell that ends it (``idle_before``, the footer's and the session's
  one rule): the time since the previous cell of the same pool (GPU type and image) in the session
  ended, on that cell's worker; when the cell went to another worker (the first one had stopped),
  the first one's keep-warm, at most the gap.  So the footers add up to the session's total but for
  the per-worker rounding and the keep-warm still running (``pending_keep_warm_s``).
- the keep-warm tail after a worker's last cell is not in the totals (a kernel that exits or
  `%gpu release` stops it at once); it is reported as ``pending_keep_warm_s``, at most keep-warm.
- dedicated: one GPU of each type used, billed for the session's wall time (busy or idle),
  rounded by the dedicated entry's granularity and minimum.
- a cell that ran on a worker of the backend's dedicated pool (footer ``pool: dedicated``, hybrid
  pools) is not billed per second: the pool is billed per hour, busy or not, to whoever runs it (the
  backend's ``/api/pools``).  The cell's ``cost_usd`` is its share: run seconds x the dedicated
  hourly price / 3600; its keep-warm idle is the pool's, not the session's.
"""
from __future__ import annotations

import math

HOURS_PER_MONTH = 730.0  # 365 * 24 / 12
HEADROOM = 1.1  # right-sizing: a GPU fits when its memory >= peak * HEADROOM


def round_billed(seconds: float, granularity: float = 1.0, minimum: float = 0.0) -> float:
    """Billed seconds for ``seconds`` of use: rounded up to the granularity, at least the minimum."""
    if seconds <= 0:
        return 0.0
    if granularity and granularity > 0:
        seconds = math.ceil(seconds / granularity - 1e-9) * granularity
    return max(seconds, minimum)


def _profile(price: dict) -> dict:
    return price.get("profile") or {"bills_cold_start": True, "bills_keep_warm": True, "unit": "worker"}


def cell(timings: dict, price: dict, pool: str | None = None) -> dict:
    """Per cell: billed seconds by phase, serverless cost, and the dedicated estimate for its wall time.

    ``timings``: queue, cold_start, run, wall (seconds); ``price``: `Price.as_dict()`; ``pool``:
    "dedicated" for a cell that ran on the backend's dedicated pool (then nothing is billed per second
    and ``cost_usd`` is its share of the hourly price)."""
    if pool == "dedicated":
        run, per_h = timings.get("run", 0.0), price.get("dedicated_per_h", 0.0)
        return {"billed": {"cold_start": 0.0, "run": 0.0, "rounding": 0.0}, "billed_seconds": 0.0,
                "cost_usd": run * per_h / 3600.0, "dedicated_usd": timings.get("wall", 0.0) * per_h / 3600.0,
                "billing": "dedicated"}
    prof = _profile(price)
    cold = timings.get("cold_start", 0.0) if prof.get("bills_cold_start", True) else 0.0
    # an image build runs on the backend's host, not on a GPU: billed only where the profile says so
    build = timings.get("build", 0.0) if prof.get("bills_build", False) else 0.0
    run = timings.get("run", 0.0)
    raw = cold + run + build
    billed = raw
    if prof.get("unit") == "cell":
        billed = round_billed(raw, price.get("granularity_s", 1.0), price.get("minimum_s", 0.0))
    wall = timings.get("wall", 0.0)
    return {
        "billed": {"cold_start": cold, "run": run, "rounding": billed - raw, **({"build": build} if build else {})},
        "billed_seconds": billed,
        "cost_usd": billed * price.get("serverless_per_s", 0.0),
        "dedicated_usd": wall * price.get("dedicated_per_h", 0.0) / 3600.0,
    }


def _pool(r: dict) -> tuple:
    return r.get("session"), r.get("gpu"), r.get("image") or "default"


def idle_after(prev: dict, r: dict) -> float:
    """Keep-warm idle seconds between ``prev`` and ``r``, the next cell of the same pool (``_pool``)
    in the session: on ``prev``'s worker, billed to ``r`` (0 for the dedicated pool's workers: their
    idle is the pool's, billed per hour)."""
    if prev.get("pool") == "dedicated" or prev.get("status") in ("killed", "lost"):
        return 0.0
    if prev.get("worker_ended_at") and r.get("worker_ended_at"):
        # the worker's own clock: from its end of ``prev`` to its start of ``r`` (the kernel's view
        # adds its own work before and after a cell, during which the worker idles, billed)
        t = r.get("timings", {})
        began = r["worker_ended_at"] - t.get("queue", 0.0) - t.get("cold_start", 0.0) - t.get("run", 0.0)
        gap = max(0.0, began - prev["worker_ended_at"])
    else:  # footers from before the worker said when a cell ended
        gap = max(0.0, _start(r) - _end(prev))
    if prev.get("worker") is not None and prev.get("worker") == r.get("worker"):
        return gap
    return min(prev.get("keep_warm") or 0.0, gap)  # that worker stopped at most keep-warm after


def idle_before(previous: list[dict], r: dict) -> tuple[float, dict | None]:
    """(idle seconds billed to ``r``, the cell on whose worker they were), from the session's earlier
    footers (``previous``, in order).  Scans back to the pool's last cell: the last one, mostly."""
    key = _pool(r)
    for prev in reversed(previous):
        if _pool(prev) == key:
            return idle_after(prev, r), prev
    return 0.0, None


def idle_cost(idle: float, prev: dict | None) -> tuple[float, float]:
    """(billed seconds, USD) of keep-warm idle on ``prev``'s worker, per its price's profile."""
    if prev is None or idle <= 0:
        return 0.0, 0.0
    price = prev.get("price") or {}
    if not _profile(price).get("bills_keep_warm", True):
        return 0.0, 0.0
    return idle, idle * price.get("serverless_per_s", 0.0)


def _start(r: dict) -> float:
    return r.get("started_at", 0.0)


def _end(r: dict) -> float:
    return _start(r) + r.get("timings", {}).get("wall", 0.0)


def _placed(records: list[dict]) -> list[dict]:
    """Records in time order; footers without timestamps (older ones) are placed back to back."""
    out, t = [], 0.0
    for r in records:
        r = dict(r)
        if "started_at" not in r:
            r["started_at"] = t
        t = _end(r)
        out.append(r)
    return sorted(out, key=_start)


def session(records: list[dict]) -> dict:
    """Per session (or folder of notebooks): GPU-seconds by phase, wall, utilisation, serverless vs
    dedicated, break-even, monthly projection, recommendation, right-sizing, and a timeline."""
    recs = _placed(records)
    phases = {"queue": 0.0, "cold_start": 0.0, "run": 0.0, "keep_warm_idle": 0.0, "rounding": 0.0}
    billed_phases = dict(phases)
    by_worker: dict = {}
    for r in recs:
        key = (r.get("session"), r.get("gpu"), r.get("worker") or f"?{id(r)}")
        by_worker.setdefault(key, []).append(r)
        t = r.get("timings", {})
        for p in ("queue", "cold_start", "run"):
            phases[p] += t.get(p, 0.0)
    # keep-warm idle (idle_after, the footers' rule): billed on the worker of the pool's previous
    # cell; after the pool's last cell of the session: pending, at most keep-warm
    idle_of: dict = {}
    last: dict = {}
    for r in recs:
        prev = last.get(_pool(r))
        if prev is not None:
            k = (prev.get("session"), prev.get("gpu"), prev.get("worker") or f"?{id(prev)}")
            idle_of[k] = idle_of.get(k, 0.0) + idle_after(prev, r)
        last[_pool(r)] = r
    pending = sum((p.get("keep_warm") or 0.0) for p in last.values()
                  if p.get("status") not in ("killed", "lost") and p.get("pool") != "dedicated"
                  and _profile(p.get("price", {})).get("bills_keep_warm", True))
    serverless_usd, pool_usd = 0.0, 0.0
    for key, cells in by_worker.items():
        price = cells[0].get("price", {})
        prof = _profile(price)
        on_pool = cells[0].get("pool") == "dedicated"  # billed per hour to the pool, not per second
        idle = idle_of.get(key, 0.0)
        phases["keep_warm_idle"] += idle
        cell_costs = [cell(r.get("timings", {}), r.get("price", price), r.get("pool")) for r in cells]
        if on_pool:  # the session's share of the dedicated pool: its cells' run time at the hourly price
            pool_usd += sum(c["cost_usd"] for c in cell_costs)
            continue
        billed_idle = idle if prof.get("bills_keep_warm", True) else 0.0
        raw = sum(c["billed_seconds"] for c in cell_costs) + billed_idle
        total = raw
        if prof.get("unit", "worker") != "cell":
            total = round_billed(raw, price.get("granularity_s", 1.0), price.get("minimum_s", 0.0))
        for c in cell_costs:
            for p in ("cold_start", "run", "rounding"):
                billed_phases[p] += c["billed"][p]
        billed_phases["keep_warm_idle"] += billed_idle
        billed_phases["rounding"] += total - raw
        serverless_usd += total * price.get("serverless_per_s", 0.0)
    wall = (max(_end(r) for r in recs) - min(_start(r) for r in recs)) if recs else 0.0
    busy = phases["run"]
    gpus = _gpus(recs, wall)
    dedicated_usd = sum(g["dedicated_usd"] for g in gpus.values())
    s = {
        "cells": len(recs),
        "failed": sum(1 for r in recs if r.get("status") != "ok"),
        "cold_starts": sum(1 for r in recs if r.get("cold")),
        "devices": sorted({r.get("device") or "?" for r in recs}),
        "gpus": gpus,
        "phases_s": phases,
        "billed_s": billed_phases,
        "billed_seconds": sum(billed_phases.values()),
        "wall_s": wall,
        "busy_s": busy,
        "utilisation": busy / wall if wall > 0 else 0.0,
        "serverless_usd": serverless_usd,
        "dedicated_usd": dedicated_usd,
        "dedicated_pool_usd": pool_usd,  # share of the backend's dedicated pool (hybrid pools)
        "pending_keep_warm_s": pending,
        "timeline": _timeline(recs, wall),
    }
    s.update(_economics(s, recs))
    s["right_size"] = right_size(recs)
    return s


def _gpus(recs: list[dict], wall: float) -> dict:
    out: dict = {}
    for r in recs:
        g = r.get("gpu") or "?"
        if g not in out:
            price = r.get("price", {})
            billed = round_billed(wall, price.get("dedicated_granularity_s", 1.0), price.get("dedicated_minimum_s", 0.0))
            out[g] = {"price": price, "cells": 0, "run_s": 0.0,
                      "dedicated_usd": billed * price.get("dedicated_per_h", 0.0) / 3600.0}
        out[g]["cells"] += 1
        out[g]["run_s"] += r.get("timings", {}).get("run", 0.0)
    return out


def _timeline(recs: list[dict], wall: float) -> list[dict]:
    """One point per cell: offset from the first cell, its phases, cost and the running total."""
    t0 = min((_start(r) for r in recs), default=0.0)
    total, out, last = 0.0, [], {}
    for r in recs:
        c = cell(r.get("timings", {}), r.get("price", {}), r.get("pool"))
        prev = last.get(_pool(r))
        idle_s, idle_usd = idle_cost(idle_after(prev, r), prev) if prev is not None else (0.0, 0.0)
        last[_pool(r)] = r
        total += c["cost_usd"] + idle_usd
        t = r.get("timings", {})
        out.append({"t": _start(r) - t0, "wall": t.get("wall", 0.0), "queue": t.get("queue", 0.0),
                    "cold_start": t.get("cold_start", 0.0), "run": t.get("run", 0.0), "gpu": r.get("gpu"),
                    "status": r.get("status"), "keep_warm_idle": idle_s,
                    "cost_usd": c["cost_usd"] + idle_usd, "cumulative_usd": total})  # = the cell's footer
    return out


def _economics(s: dict, recs: list[dict]) -> dict:
    """Break-even, monthly projection and the recommendation, for the GPU type billed most."""
    if not s["gpus"]:
        return {"break_even": None, "monthly": None, "recommendation": {"choice": "none", "reason": "no %%gpu cells"}}
    gpu, g = max(s["gpus"].items(), key=lambda kv: kv[1]["run_s"])
    p = g["price"]
    per_s, per_h = p.get("serverless_per_s", 0.0), p.get("dedicated_per_h", 0.0)
    be_util = per_h / (3600.0 * per_s) if per_s > 0 else None
    per_request = s["serverless_usd"] / s["cells"] if s["cells"] else 0.0
    dedicated_month = per_h * HOURS_PER_MONTH
    be_requests = dedicated_month / per_request if per_request > 0 else None
    rate = s["serverless_usd"] / s["wall_s"] if s["wall_s"] > 0 else 0.0
    monthly = {
        "assumes": "this session's activity pattern running around the clock (730 h)",
        "serverless_usd": rate * HOURS_PER_MONTH * 3600.0,
        "dedicated_usd": sum(x["price"].get("dedicated_per_h", 0.0) for x in s["gpus"].values()) * HOURS_PER_MONTH,
        "requests": s["cells"] / s["wall_s"] * HOURS_PER_MONTH * 3600.0 if s["wall_s"] > 0 else 0.0,
    }
    # the utilisation at which the measured serverless cost per busy second equals the dedicated rate
    be_observed = (per_h / 3600.0) * s["busy_s"] / s["serverless_usd"] if s["serverless_usd"] > 0 else None
    be = {"gpu": gpu, "utilisation": be_util, "utilisation_observed": be_observed, "requests_per_month": be_requests,
          "serverless_per_s": per_s, "dedicated_per_h": per_h,
          "serverless_usd_per_request": per_request}
    return {"break_even": be, "monthly": monthly, "recommendation": recommend(s, be, recs)}


def recommend(s: dict, be: dict, recs: list[dict]) -> dict:
    """serverless / dedicated / hybrid with its reason.

    The deciding figure is the measured one: serverless cost / dedicated cost for the same wall time
    (= utilisation / break-even utilisation at the observed overheads: cold starts, keep-warm idle,
    rounding).  Traffic variability picks hybrid over dedicated; cold-start share and a short sample
    are notes."""
    u, gpu = s["utilisation"], be["gpu"]
    notes = []
    cold_share = s["phases_s"]["cold_start"] / (s["phases_s"]["cold_start"] + s["busy_s"]) if s["busy_s"] else 0.0
    if cold_share > 0.2:
        notes.append(f"cold starts are {cold_share:.0%} of GPU time: a longer --keep-warm or min_warm spares "
                     "hide them if their latency matters")
    if s["wall_s"] < 600:
        notes.append(f"a {s['wall_s']:.0f} s sample: projections extrapolate a short session")
    gaps = [b["t"] - (a["t"] + a["wall"]) for a, b in zip(s["timeline"], s["timeline"][1:])]
    cv = _cv(gaps)
    S, D = s["serverless_usd"], s["dedicated_usd"]
    # the pattern, not the sample: a dedicated instance's billing minimum (AWS: 60 s) dwarfs a short
    # session's wall time, and would make serverless look cheap for a load that is steady
    at_rate = sum(g["price"].get("dedicated_per_h", 0.0) for g in s["gpus"].values()) * s["wall_s"] / 3600.0
    if 0 < at_rate < D:
        notes.append(f"the dedicated figure ${D:.6f} is its billing minimum; compared at its hourly rate "
                     f"for the same {s['wall_s']:.0f} s (${at_rate:.6f})")
        D = at_rate
    ube, ueff = be["utilisation"], be["utilisation_observed"]
    at_list = f"; at list prices the break-even utilisation is {ube:.0%}" if ube is not None else ""
    if D == 0 and S > 0:
        choice, reason = "dedicated", f"a dedicated {gpu} is priced at $0/h here (your own box)"
    elif S == 0 or D == 0:
        choice, reason = "none", f"no price for {gpu} on one side: nothing to compare"
    else:
        r = S / D
        head = (f"serverless ${S:.6f} is {r:.0%} of a dedicated {gpu} for the same wall time "
                f"(utilisation {u:.0%} vs a break-even of {ueff:.0%} with the cold starts, idle and rounding measured"
                f"{at_list})")
        if r >= 1 and cv > 1.0:
            choice, reason = "hybrid", head + (f"; traffic is bursty (gap variability {cv:.1f}): a dedicated base for "
                                               "the steady load, serverless for the bursts")
        elif r >= 1:
            choice, reason = "dedicated", head + "; the load is steady"
        elif r >= 0.7:
            choice, reason = "hybrid", head + ": close to break-even, a dedicated base for the steady part and " \
                                              "serverless for the peaks"
        else:
            choice, reason = "serverless", head
    return {"choice": choice, "reason": reason, "notes": notes, "gap_variability": cv}


def _cv(xs: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = sum(xs) / len(xs)
    if m <= 0:
        return 0.0
    return (sum((x - m) ** 2 for x in xs) / len(xs)) ** 0.5 / m


def peak_memory(recs: list[dict]) -> float | None:
    """The largest peak GPU memory (bytes) the footers recorded, if any did."""
    peaks = [r.get("telemetry", {}).get("peak_memory_bytes") for r in recs]
    peaks = [p for p in peaks if p]
    return max(peaks) if peaks else None


def right_size(recs: list[dict], catalog=None) -> dict | None:
    """"peak 11 GiB: fits an L4 at 20 % of the price" - the cheapest GPU whose memory fits the peak."""
    peak = peak_memory(recs)
    if peak is None or not recs:
        return None
    if catalog is None:
        from jupyter_gpu.cost import pricing

        catalog = pricing.PRICES if pricing.PRICES else (pricing.current() and pricing.PRICES)
    gpu = max({r.get("gpu") for r in recs}, key=lambda g: sum(1 for r in recs if r.get("gpu") == g))
    now = next(r.get("price", {}) for r in recs if r.get("gpu") == gpu)
    now_per_s = now.get("serverless_per_s", 0.0)
    peak_gib = peak / 1024**3
    fits = [p for p in catalog.values() if p.memory_gib and p.memory_gib >= peak_gib * HEADROOM and p.serverless_per_s > 0]
    if not fits or now_per_s <= 0:
        return {"peak_gib": peak_gib, "gpu": gpu, "fits": None, "text": f"peak {peak_gib:.1f} GiB on {gpu}"}
    best = min(fits, key=lambda p: p.serverless_per_s)
    ratio = best.serverless_per_s / now_per_s
    if best.gpu == gpu or ratio >= 1:
        text = f"peak {peak_gib:.1f} GiB: {gpu} is already the cheapest GPU that fits"
    else:
        text = (f"peak {peak_gib:.1f} GiB: fits {_a(best.gpu)} {best.gpu} ({best.memory_gib:g} GiB) at {ratio:.0%} of the price "
                f"({best.serverless_provider} {best.serverless_as_of})")
    return {"peak_gib": peak_gib, "gpu": gpu, "fits": best.gpu, "price_ratio": ratio, "text": text}


def _a(name: str) -> str:
    """The article a GPU name takes when read aloud ("an L4", "a T4", "an H100")."""
    return "an" if name[:1].upper() in "AEFHILMNORSX" else "a"
