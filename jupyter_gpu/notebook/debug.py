"""`%debug` after a failed `%%gpu` cell debugs where the error's frames are: on its worker.

The kernel re-raises a `%%gpu` cell's error (cell_outcome.py) from its own code, so IPython's
`%debug` would post-mortem this extension's frames (cell.conclude), not the cell's.  A bare
`%debug` whose last error came from a worker runs `%debug` there instead, as a `%%gpu` cell on
the same GPU type and image: the worker post-mortems its last error, the cell's own frames, with
their source listed, and pdb's prompts come through this notebook (stdin.py).  It says so first.
When that worker is gone, its frames went with it: it says that, and starts no debugger.
`%debug` with arguments, and after a local error, is IPython's own.
"""
from __future__ import annotations

import sys

from jupyter_gpu._wire.pools import pool_key
from jupyter_gpu.notebook.cell import run_cell
from jupyter_gpu.notebook.cell_options import CellOptions

_ORIGINAL = "_jupyter_gpu_original"


def remote_frames(exc) -> dict | None:
    """Where the frames of ``exc`` are, if a `%%gpu` cell raised it: worker, gpu, image, device."""
    return getattr(exc, "_jupyter_gpu_frames", None)


def install(shell, session) -> None:
    """Put our `%debug` in front of IPython's (line mode; `%%debug` stays IPython's)."""
    manager = shell.magics_manager
    line_magics = manager.magics["line"]
    found = line_magics.get("debug")
    if found is None:
        return
    ipython_debug = [getattr(found, _ORIGINAL, found)]

    def debug(line="", cell=None):
        """IPython's %debug (see %debug's own help: `%debug -h`); after an error of a `%%gpu` cell,
        a bare %debug debugs it on its worker, where its frames are."""
        frames = remote_frames(getattr(sys, "last_value", None))
        if frames is None or line.strip() or cell is not None:
            return _ipython_debug()(line, cell) if cell is not None else _ipython_debug()(line)
        return debug_remote(session, frames)

    def _ipython_debug():
        fn = ipython_debug[0]
        if type(fn).__name__ == "LazyMagic":  # IPython 9 imports a magic's class when first used
            fn = ipython_debug[0] = manager.registry[fn.spec.partition(":")[2]].magics["line"]["debug"]
            setattr(debug, _ORIGINAL, fn)
        return fn

    setattr(debug, _ORIGINAL, ipython_debug[0])
    line_magics["debug"] = debug


def uninstall(shell) -> None:
    line_magics = shell.magics_manager.magics["line"]
    original = getattr(line_magics.get("debug"), _ORIGINAL, None)
    if original is not None:
        line_magics["debug"] = original


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
