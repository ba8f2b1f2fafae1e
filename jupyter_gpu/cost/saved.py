"""A cost summary built from the footers saved in executed notebooks (no backend needed).

`footers(nb)` is what every report reads; `summarize` is the one-line sum of the cells' own costs.
The full session accounting (keep-warm idle, rounding per worker, break-even, advice) is
`cost.session`, presented by `report.py`.
"""
from __future__ import annotations

from jupyter_gpu.cost.footer import MIME


def footers(nb) -> list[dict]:
    """The final footer of every `%%gpu` cell, in cell order (live status lines are skipped)."""
    found = []
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            data = out.get("data", {}).get(MIME)
            if isinstance(data, dict) and not data.get("live"):
                found.append(data)
    return found


def summarize(records: list[dict]) -> dict:
    total = {
        "cells": len(records),
        "failed": sum(1 for r in records if r.get("status") != "ok"),
        "cold_starts": sum(1 for r in records if r.get("cold")),
        "billed_seconds": sum(r.get("billed_seconds", 0.0) for r in records),
        "cost_usd": sum(r.get("cost_usd", 0.0) for r in records),
        "dedicated_usd": sum(r.get("dedicated_usd", 0.0) for r in records),
        "wall_seconds": sum(r.get("timings", {}).get("wall", 0.0) for r in records),
        "devices": sorted({r.get("device") or "?" for r in records}),
    }
    return total


def text(s: dict) -> str:
    return (
        f"{s['cells']} %%gpu cell(s) on {', '.join(s['devices']) or 'no device'}: "
        f"{s['failed']} failed, {s['cold_starts']} cold start(s); "
        f"{s['billed_seconds']:.3f} GPU-s billed, ${s['cost_usd']:.6f} serverless "
        f"vs ${s['dedicated_usd']:.6f} on a dedicated instance for the same {s['wall_seconds']:.2f} s of cell time"
    )
