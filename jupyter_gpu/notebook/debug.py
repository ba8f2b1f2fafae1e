"""`%debug` after a failed `%%gpu` cell debugs where the error's frames are: on its worker.

The kernel re-raises a `%%gpu` cell's error (cell_outcome.py) from its own code, so IPython's
`%debug` would post-mortem this extension's frames (cell.conclude), not the cell's.  A bare
`%debug` whose last error came from a worker runs `%debug` there instead, as a `%%gpu` cell on
the same GPU type and image: the worker post-mortems its last error, the cell's own frames, with
their source listed, and pdb's prompts come through this notebook (stdin.py).  It says so first.
When that worker is gone, its frames went with it: it says that, and starts no debugger.
`%pdb on` does the same after a `%%gpu` cell's error.  `%debug` with arguments, and after a
local error, is IPython's own.
"""
from __future__ import annotations

import sys

from jupyter_gpu._wire.pools import pool_key
from jupyter_gpu.notebook.cell import run_cell
from jupyter_gpu.notebook.cell_options import CellOptions

_OURS = "_jupyter_gpu_debugger"  # marks the shell's debugger we installed


def remote_frames(exc) -> dict | None:
    """Where the frames of ``exc`` are, if a `%%gpu` cell raised it: worker, gpu, image, device."""
    return getattr(exc, "_jupyter_gpu_frames", None)


def install(shell, session) -> None:
    """Put ours in front of the shell's post-mortem debugger, which a bare `%debug` calls, and
    `%pdb on` after an error."""
    ipython_debugger = getattr(shell.debugger, _OURS, shell.debugger)

    def debugger(force=False):
        frames = remote_frames(getattr(sys, "last_exc", None) or getattr(sys, "last_value", None))
        if frames is None or not (force or shell.call_pdb):
            return ipython_debugger(force)
        return debug_remote(session, frames)

    setattr(debugger, _OURS, ipython_debugger)
    shell.debugger = debugger


def uninstall(shell) -> None:
    original = getattr(shell.debugger, _OURS, None)
    if original is not None:
        shell.debugger = original


def debug_remote(session, frames: dict) -> None:
    worker, device = frames.get("worker"), frames.get("device")
    gpu, image = frames.get("gpu") or "cpu", frames.get("image")
    held = session.held.get(pool_key(gpu, image))
    if held is None or held.worker != worker:
        print(f"jupyter-gpu: the frames of the last error were on worker {worker} ({device}), which is gone "
              "with them (its keep-warm ran out, or it was released): run the cell again, then %debug",
              file=sys.stderr)
        return
    print(f"jupyter-gpu: the frames of the last error are on worker {worker} ({device}): debugging them there",
          file=sys.stderr)
    run_cell(session, "%debug\n", CellOptions(gpu=gpu, image=image))
