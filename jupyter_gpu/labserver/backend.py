"""Where the server extension finds the backend, and what it asks it (read-only REST)."""
from __future__ import annotations

import json
import os
import time
import urllib.parse

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from jupyter_gpu._client import embedded
from jupyter_gpu._wire.shm import pid_alive
from jupyter_gpu._wire.wsclient import https_context

TIMEOUT = 5.0


class NoBackend(Exception):
    """No backend is configured and the embedded one is not running (nothing to ask yet)."""


def find() -> tuple[str, str, str]:
    """(url, token, source) like the kernel finds it, but never starts one.

    A backend started here would have no client and exit after its grace period; the kernel's
    first `%%gpu` cell (or Pre-warm, which runs in the kernel) starts the embedded one.  Only the
    server's own configuration says which backend: a URL a request named would let any user of the
    server make it fetch whatever that URL reaches from its host.
    """
    conf = embedded.configured()
    if conf:
        return conf[0], conf[1], "configured"
    path = os.path.join(embedded.runtime_dir(), "backend.json")
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, ValueError):
        raise NoBackend("the embedded backend is not running") from None
    if not pid_alive(info.get("pid", -1)):
        raise NoBackend("the embedded backend is not running")
    return info["url"], info["token"], "embedded"


class BackendError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


async def get(base: str, token: str, path: str, **query) -> dict:
    q = {k: v for k, v in query.items() if v is not None}
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(q)}" if q else "")
    try:
        r = await AsyncHTTPClient().fetch(url, headers={"Authorization": f"token {token}"}, request_timeout=TIMEOUT,
                                          ssl_options=https_context(url))  # https: verified (JUPYTER_GPU_CAFILE)
    except HTTPClientError as e:
        raise BackendError(e.code, f"the backend answered HTTP {e.code} for {path}") from None
    except OSError as e:
        raise BackendError(502, f"cannot reach the backend at {base}: {e}") from None
    return json.loads(r.body)


def catalog(offers: list[str]) -> list[dict]:
    """Each GPU type with its serverless and dedicated price per hour, from the price catalog."""
    from jupyter_gpu.cost import pricing

    try:
        gpus = list(pricing.current().gpus())
    except AttributeError:  # the plain price table
        gpus = list(pricing.PRICES)
    rows = []
    for gpu in dict.fromkeys([*offers, *gpus, "cpu"]):  # the local runtime always has the cpu device
        p = pricing.price_for(gpu).as_dict()
        rows.append({
            "gpu": gpu,
            "serverless_per_h": p["serverless_per_s"] * 3600.0,
            "dedicated_per_h": p["dedicated_per_h"],
            "provider": p.get("provider"),
            "as_of": p.get("as_of"),
            "dedicated_provider": p.get("dedicated_provider"),
            "note": p.get("note", ""),
            "basis": p.get("basis", ""),  # "cpu (2 cores) at Modal CPU list price ...": what was priced
        })
    return rows


def cost(cells: list[dict], leases: list[dict] | None = None, now: float | None = None) -> dict:
    """A session's cost so far from its ledger rows, by the footers' rules (`billing.cell`,
    `billing.idle_after`): each cell's billed seconds x its worker's price (a per-core price sized by
    the device the worker reported), the keep-warm idle each cell ended, the idle accrued so far
    after each pool's last cell (until its worker stopped, or now on a live one, at most its
    keep-warm), and a running cell's seconds so far; the dedicated estimate over the cells' wall time.
    ``leases``: the session's live workers (``/api/status``): their devices and keep-warm."""
    from jupyter_gpu.cost import billing, pricing

    now = time.time() if now is None else now
    live = {w.get("worker"): w for w in leases or []}
    usd = dedicated = seconds = idle_s = idle_usd = 0.0
    running = 0
    last: dict = {}
    for c in sorted(cells, key=lambda c: c.get("submitted") or 0.0):
        device = c.get("device") or live.get(c.get("worker"), {}).get("device")
        price = pricing.price_for(c.get("gpu") or "cpu", device).as_dict()
        rec = _record(c, price, now, live)
        if c.get("status") in ("running", "queued"):
            running += 1
            billed = max(0.0, now - (c.get("submitted") or now)) if c.get("status") == "running" else 0.0
            seconds += billed
            usd += billed * price["serverless_per_s"]
            dedicated += rec["timings"]["wall"] * price["dedicated_per_h"] / 3600.0
        else:
            one = billing.cell(rec["timings"], price, c.get("pool"))
            seconds += one["billed_seconds"]
            usd += one["cost_usd"]
            dedicated += one["dedicated_usd"]
        prev = last.get(billing._pool(rec))
        if prev is not None:
            s, u = billing.idle_cost(billing.idle_after(prev, rec), prev)
            idle_s, idle_usd = idle_s + s, idle_usd + u
        last[billing._pool(rec)] = rec
    accruing = 0.0
    for prev in last.values():  # after each pool's last cell: the idle so far (the report's "pending")
        if prev["status"] in ("running", "queued", "killed", "lost") or prev.get("pool") == "dedicated":
            continue
        until = prev["stopped"] or now
        gap = max(0.0, until - (prev["started_at"] + prev["timings"]["wall"]))
        lease = live.get(prev["worker"])
        if lease is not None and lease.get("keep_warm") is not None:
            gap = min(gap, float(lease["keep_warm"]))
        s, u = billing.idle_cost(gap, prev)
        accruing += s
        idle_s, idle_usd = idle_s + s, idle_usd + u
    return {"usd": usd + idle_usd, "dedicated_usd": dedicated, "gpu_seconds": seconds + idle_s, "cells": len(cells),
            "running": running, "keep_warm_idle_s": idle_s, "keep_warm_idle_usd": idle_usd,
            "keep_warm_accruing_s": accruing,
            # a cpu worker's seconds are not GPU-seconds (the sidebar's unit)
            "seconds_unit": "worker-s" if cells and all((c.get("gpu") or "cpu") == "cpu" for c in cells) else "GPU-s"}


def _record(c: dict, price: dict, now: float, live: dict) -> dict:
    """A ledger row as a footer-like record (backend clock) for `billing`."""
    submitted = c.get("submitted") or now
    done = c.get("done") if c.get("status") not in ("running", "queued") else None
    return {"session": c.get("session"), "gpu": c.get("gpu"), "image": c.get("image"), "worker": c.get("worker"),
            "status": c.get("status"), "pool": c.get("pool"), "price": price, "started_at": submitted,
            # how long the worker stayed warm after this cell: until it stopped, else its lease's keep-warm
            "keep_warm": (c["worker_stopped"] - done if c.get("worker_stopped") and done
                          else (live.get(c.get("worker")) or {}).get("keep_warm")),
            "stopped": c.get("worker_stopped"),
            "timings": {"queue": c.get("queue_s") or 0.0, "cold_start": c.get("cold_start_s") or 0.0,
                        "run": c.get("run_s") or 0.0, "wall": max(0.0, (done or now) - submitted)}}
