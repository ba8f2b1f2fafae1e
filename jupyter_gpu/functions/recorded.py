"""A spawned call's id kept in its cell's metadata, ``jupyter_gpu.calls`` (a list of {id, function,
created}), so a saved notebook names the calls its cells spawned even once their outputs are
cleared: `jupyter-gpu run` writes it into the notebooks it executes (here), the lab extension in the
page (labextension/src/calls.ts, the same rules: no id twice, the newest MAX_CALLS, other keys kept).

A kernel cannot write its cell's metadata, so both read the spawn's output (``jobs.MIME``).
"""
from __future__ import annotations

import json
import math
import re

KEY = "jupyter_gpu"  # the cell metadata key; ``calls`` inside it
MAX_CALLS = 200  # per cell, newest kept: a loop of spawns must not grow a notebook without end
ID_RE = re.compile(r"fc-[A-Za-z0-9_-]{1,64}")  # a notebook is untrusted input; an id is pasted into code


def call_of(value) -> dict | None:
    """The call in an output's data (a dict or its JSON text); None when it holds no valid one."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, dict) or not isinstance(value.get("id"), str) or not ID_RE.fullmatch(value["id"]):
        return None
    created = value.get("created")
    ok = isinstance(created, (int, float)) and not isinstance(created, bool) and math.isfinite(created)
    name = value.get("function")
    return {"id": value["id"], "function": name if isinstance(name, str) else "", "created": created if ok else None}


def cell_calls(cell, mime: str) -> list[dict]:
    """The calls a cell's outputs show, in order."""
    found = []
    for out in cell.get("outputs") or []:
        data = out.get("data") if isinstance(out, dict) else None
        if isinstance(data, dict) and mime in data:
            c = call_of(data[mime])
            if c is not None:
                found.append(c)
    return found


def record_calls(nb) -> int:
    """Add each code cell's spawned calls to its metadata (nbformat JSON, in place); how many were new."""
    from jupyter_gpu.functions.jobs import MIME  # the kernel's side owns the mime type

    added = 0
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        calls = cell_calls(cell, MIME)
        if not calls:
            continue
        meta = cell.setdefault("metadata", {})
        mine = meta.get(KEY) if isinstance(meta.get(KEY), dict) else {}
        listed = mine.get("calls") if isinstance(mine.get("calls"), list) else []
        known = [c for c in map(call_of, listed) if c is not None]  # a hand-edited entry that is not a call: dropped
        ids = {c["id"] for c in known}
        new = []
        for c in calls:
            if c["id"] not in ids:
                ids.add(c["id"])
                new.append(c)
        if new:
            meta[KEY] = {**mine, "calls": (known + new)[-MAX_CALLS:]}
            added += len(new)
    return added
