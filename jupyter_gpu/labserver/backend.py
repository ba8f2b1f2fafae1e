"""Where the server extension finds the backend, and what it asks it (read-only REST)."""
from __future__ import annotations

import json
import os
import time
import urllib.parse

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from jupyter_gpu._client import embedded
from jupyter_gpu._wire.shm import pid_alive

TIMEOUT = 5.0


class NoBackend(Exception):
    """No backend is configured and the embedded one is not running (nothing to ask yet)."""


def find(url: str | None = None, token: str | None = None) -> tuple[str, str, str]:
    """(url, token, source) like the kernel finds it, but never starts one.

    A backend started here would have no client and exit after its grace period; the kernel's
    first `%%gpu` cell (or Pre-warm, which runs in the kernel) starts the embedded one.
    """
    if url:
        return url.rstrip("/"), token or "", "settings"
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
        r = await AsyncHTTPClient().fetch(url, headers={"Authorization": f"token {token}"}, request_timeout=TIMEOUT)
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
        })
    return rows


def cost(cells: list[dict], now: float | None = None) -> dict:
    """A session's cost so far from its ledger rows: billed seconds (cold start + run) x price,
    and a running cell's seconds so far; the dedicated estimate over the same cells' wall time."""
    from jupyter_gpu.cost import pricing

    now = time.time() if now is None else now
    usd = dedicated = seconds = 0.0
    running = 0
    for c in cells:
        price = pricing.price_for(c.get("gpu") or "cpu")
        if c.get("status") in ("running", "queued"):
            running += 1
            billed = max(0.0, now - (c.get("submitted") or now)) if c.get("status") == "running" else 0.0
            wall = max(0.0, now - (c.get("submitted") or now))
        else:
            billed = (c.get("cold_start_s") or 0.0) + (c.get("run_s") or 0.0)
            wall = max(0.0, (c.get("done") or now) - (c.get("submitted") or now))
        seconds += billed
        usd += billed * price.serverless_per_s
        dedicated += wall * price.dedicated_per_h / 3600.0
    return {"usd": usd, "dedicated_usd": dedicated, "gpu_seconds": seconds, "cells": len(cells), "running": running}
