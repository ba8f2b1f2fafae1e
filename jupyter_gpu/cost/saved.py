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


# The metadata of a live status line once it is emptied at the cell's end: the frontend keeps it as
# an invisible output (only clear_output removes an output, and that would take the cell's own
# with it), so a saved notebook drops it (drop_emptied_live: the lab's pre-save hook and
# `jupyter-gpu run`): saved, a `%%gpu` cell's outputs are its own and its footer.
EMPTIED = {"jupyter_gpu": "emptied live status"}


def drop_emptied_live(nb) -> int:
    """Remove the emptied live status lines from a notebook (nbformat JSON, in place); how many."""
    dropped = 0
    for cell in nb.get("cells", []):
        outputs = cell.get("outputs")
        if not outputs:
            continue
        kept = [o for o in outputs if not (o.get("output_type") == "display_data" and not o.get("data")
                                           and (o.get("metadata") or {}).get("jupyter_gpu") == EMPTIED["jupyter_gpu"])]
        dropped += len(outputs) - len(kept)
        if len(kept) != len(outputs):
            cell["outputs"] = kept
    return dropped
