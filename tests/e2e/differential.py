"""Differential checks: the same code as a local cell and as a `%%gpu` cell in one kernel, their
outputs compared as a user sees them (the footer and the emptied live status left out).

``run_pairs(cases, env, path)`` runs one notebook: for each case its setup cells (local), then its
code as a local cell, then the same code as a `%%gpu` cell; it returns, per case, the two cells'
normalised outputs.  A case is ``Case(id, code, setup=(), gpu_line="")``.
"""
from __future__ import annotations

import os
import re
import sqlite3
import time
from dataclasses import dataclass, field

from .helpers import LOAD, is_footer, strip_ansi

_MODEL_ID = re.compile(r'"model_id": ?"[0-9a-f]{32}"|[0-9a-f]{32}')
# where code lives differs by design between a kernel and a worker: file paths, addresses
_ADDR = re.compile(r" at 0x[0-9a-f]+")
_DURATION = re.compile(r"\d+(?:\.\d+)?(?:e[+-]?\d+)? ?(?:ns|µs|μs|us|ms|s)\b")  # %time's figures differ run to run


@dataclass(frozen=True)
class Case:
    id: str
    code: str
    setup: tuple = ()
    gpu_line: str = ""
    # compare the tracebacks' last line only (the remote one names the worker and its frames)
    note: str = ""
    extra: tuple = field(default=())


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else value


def normalise(outputs: list) -> list:
    """What a user sees of a cell's outputs, comparable across a kernel and a worker: streams of
    one name merged, ANSI colours and object addresses dropped, widget model ids made equal, an
    error reduced to its type, value and last traceback line; execution counts dropped; a run of
stream outputs compared as each stream's text."""
    out: list = []
    for o in outputs:
        kind = o["output_type"]
        if kind in ("display_data", "execute_result"):
            data = o.get("data", {})
            if not data or is_footer(o):
                continue
            shown = {}
            for mime, value in sorted(data.items()):
                if isinstance(value, (dict, list)) and mime.endswith("json"):
                    value = _MODEL_ID.sub("<id>", str(value))
                else:
                    value = _ADDR.sub("", _MODEL_ID.sub("<id>", _text(value)))
                shown[mime] = value
            out.append((kind, shown))
        elif kind == "stream":
            # a run of stream outputs: the text of each stream (ipykernel buffers stdout and stderr
            # apart and flushes them on timers, so their interleaving is not the code's order)
            text = _DURATION.sub("<t>", _ADDR.sub("", strip_ansi(_text(o["text"]))))
            if not (out and out[-1][0] == "streams"):
                out.append(("streams", {}))
            run = out[-1][1]
            run[o["name"]] = run.get(o["name"], "") + text
        elif kind == "error":
            tb = [line for line in strip_ansi("\n".join(o.get("traceback", []))).splitlines() if line.strip()]
            out.append(("error", o["ename"], _ADDR.sub("", o["evalue"]), _ADDR.sub("", tb[-1]) if tb else ""))
        else:
            out.append((kind,))
    return out


def notebook_of(cases) -> tuple[list, list]:
    """The notebook's cell sources, and per case the indices of its local and remote cells."""
    sources, where = [LOAD], []
    for case in cases:
        sources.extend(case.setup)
        local = len(sources)
        sources.append(case.code)
        sources.append(f"%%gpu {case.gpu_line}".rstrip() + "\n" + case.code)
        where.append((local, local + 1))
    return sources, where


def run_pairs(cases, env: dict, path: str, timeout: int = 120) -> dict:
    """case id -> (local outputs, remote outputs, the two cells) after one notebook ran them all."""
    import nbformat
    from jupyter_gpu.ci.executor import NotebookClient

    sources, where = notebook_of(cases)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    client = NotebookClient(nb, kernel_name="python3", timeout=timeout, startup_timeout=120, allow_errors=True,
                            resources={"metadata": {"path": path}})
    t0 = time.time()
    client.execute(env=env)
    result = {"<span>": (t0, time.time())}
    for case, (i, j) in zip(cases, where):
        result[case.id] = (normalise(nb.cells[i]["outputs"]), normalise(nb.cells[j]["outputs"]), nb.cells[i], nb.cells[j])
    result["<notebook>"] = nb
    return result


def workers_during(env: dict, span: tuple[float, float]) -> str:
    """What the backend's ledger says of the workers of the sessions that ran cells during ``span``
    (their states, causes and cells), and its log lines then: the cause of a difference that a
    worker's replacement made (a CI run's failure must explain itself; the ledger is all it leaves)."""
    t0, t1 = span
    lines = []
    try:
        db = sqlite3.connect(env["JUPYTER_GPU_LEDGER"])
        sessions = [r[0] for r in db.execute("SELECT DISTINCT session FROM cells WHERE submitted BETWEEN ? AND ?", span)]
        for s in sessions:
            for wid, state, cause, method, req, stopped in db.execute(
                    "SELECT id, state, cause, start_method, requested, stopped FROM workers WHERE session = ? "
                    "ORDER BY requested", (s,)):
                n, first, last = db.execute("SELECT count(*), min(submitted), max(done) FROM cells WHERE worker = ?",
                                            (wid,)).fetchone()
                states = " ".join(f"{st}@{at - t0:+.1f}" for st, at in db.execute(
                    "SELECT state, at FROM worker_states WHERE worker = ? ORDER BY at", (wid,)))
                lines.append(f"session {s} worker {wid} ({method}) {state} cause={cause!r}: {n} cells "
                             f"{(first or t0) - t0:+.1f}..{(last or t0) - t0:+.1f} s; {states}")
            for cid, wid, status, sub in db.execute("SELECT id, worker, status, submitted FROM cells WHERE session = ? "
                                                    "AND status NOT IN ('ok', 'error') ORDER BY submitted", (s,)):
                lines.append(f"  cell {cid} on {wid}: {status} at {sub - t0:+.1f} s")
        db.close()
    except Exception as e:  # (the diagnosis of a failure must not hide it)
        lines.append(f"(the ledger could not be read: {e})")
    log = os.path.join(env["JUPYTER_GPU_RUNTIME_DIR"], "backend.log")
    if os.path.exists(log):
        with open(log, errors="replace") as f:
            lines += ["backend.log: " + line.rstrip() for line in f.readlines()[-40:]]
    return "\n".join(lines)
