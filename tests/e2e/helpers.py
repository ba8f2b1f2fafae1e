"""Helpers over executed notebooks (nbformat cells) for the end-to-end tests."""
from __future__ import annotations

import json
import os
import re

from jupyter_gpu._wire.shm import pid_alive

FOOTER_MIME = "application/vnd.jupyter-gpu.execution+json"
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
LOAD = "%load_ext jupyter_gpu"


def strip_ansi(text: str) -> str:
    return ANSI_RE.sub("", text)


def stream_text(cell, name: str = "stdout") -> str:
    return "".join(o["text"] for o in cell["outputs"] if o["output_type"] == "stream" and o["name"] == name)


def is_footer(output) -> bool:
    return output.get("output_type") == "display_data" and FOOTER_MIME in output.get("data", {})


def footer_json(output) -> dict:
    data = output["data"][FOOTER_MIME]
    if isinstance(data, str):
        data = json.loads(data)
    return data


def last_footer(cell) -> dict:
    """The footer JSON of a %%gpu cell; asserts the cell's last output is the footer."""
    assert cell["outputs"], f"cell has no outputs: {cell['source']!r}"
    last = cell["outputs"][-1]
    assert is_footer(last), f"last output of {cell['source']!r} is not the footer: {last}"
    return footer_json(last)


def footers(cell) -> list:
    return [footer_json(o) for o in cell["outputs"] if is_footer(o)]


def user_outputs(cell) -> list:
    """Outputs a user sees as the cell's own: no footer, no live status, no emptied bundles."""
    out = []
    for o in cell["outputs"]:
        if o["output_type"] in ("display_data", "execute_result"):
            data = o.get("data", {})
            if not data or FOOTER_MIME in data:
                continue
        out.append(o)
    return out


def rich_outputs(cell) -> list:
    return [o for o in user_outputs(cell) if o["output_type"] in ("display_data", "execute_result")]


def error_output(cell):
    errs = [o for o in cell["outputs"] if o["output_type"] == "error"]
    assert errs, f"no error output in {cell['source']!r}: {cell['outputs']}"
    return errs[-1]


def traceback_text(err) -> str:
    return strip_ansi("\n".join(err.get("traceback", [])))


def wait_pid_exit(pid: int, timeout: float) -> bool:
    """Wait (on the process's exit event, not a sleep) until ``pid`` exits or ``timeout`` passes.

    True when it exited.  An exited process can linger as a zombie until its new parent (PID 1,
    the backend's kernel being gone) reaps it; the pidfd says "exited" already then, while
    ``kill(pid, 0)`` would still find it."""
    import select

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):
        return not pid_alive(pid)
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def kill_embedded_backend(env: dict, sig: int) -> bool:
    """Send ``sig`` to the embedded backend of the kernels started with ``env`` (its runtime file
    names its pid); whether it exited within 20 s."""
    from pathlib import Path

    pid = json.loads((Path(env["JUPYTER_GPU_RUNTIME_DIR"]) / "backend.json").read_text())["pid"]
    os.kill(pid, sig)
    return wait_pid_exit(pid, 20)
