"""The footers saved in executed notebooks, read back: the one reader of them (no backend needed).

A footer is a display output whose data holds our mime type (`footer.MIME`); reports, `jupyter-gpu
run` and its terminal all read it here.  The full session accounting (keep-warm idle, rounding
per worker, break-even, advice) is `billing.session`, presented by `report.py`.
"""
from __future__ import annotations

import json

from jupyter_gpu.cost.footer import MIME


def record(data: dict) -> dict | None:
    """The footer record in an output's (or a display message's) data, live status lines
    included; None when it holds none."""
    found = data.get(MIME)
    if isinstance(found, str):
        found = json.loads(found)
    return found if isinstance(found, dict) else None


def cell_footers(cell) -> list[dict]:
    """The final footers of one cell (live status lines are skipped)."""
    found = []
    for out in cell.get("outputs", []):
        data = record(out.get("data", {}))
        if data is not None and not data.get("live"):
            found.append(data)
    return found


def footers(nb) -> list[dict]:
    """The final footer of every `%%gpu` cell, in cell order."""
    return [f for cell in nb.get("cells", []) for f in cell_footers(cell)]
