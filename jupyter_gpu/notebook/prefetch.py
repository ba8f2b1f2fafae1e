"""Import in the kernel, while the worker runs a `%%gpu` cell, the installed modules the cell imports.

A module a `%%gpu` cell imports is bound in the kernel after the cell (its name comes back as a
reference and the kernel imports it: `import numpy as np` then a local `np.zeros(3)` works), so
that import used to start only once the cell was done: `import matplotlib.pyplot as plt` cost the
first cell of a plotting notebook ~0.5 s after the worker's run.  Here the kernel starts it on a
thread as soon as the cell is sent, and the binding after the cell finds the module imported (or
waits on the import's own lock for the rest of it).

Only what is safe to import early: top-level `import X` / `from X import ...` statements of the
cell (absolute), of modules installed in the kernel's environment (not the notebook's own files,
which the cell may be rewriting), not already imported, not in a cell that installs packages, and
not pyplot when its backend would be a GUI one (a GUI must start on the main thread).  An import
that fails here is left to the binding after the cell, which says why as before.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
import sysconfig
import threading

from jupyter_gpu.notebook import uses

_INSTALLS = ("pip", "conda", "mamba", "install")
_INLINE = "module://matplotlib_inline.backend_inline"


@functools.lru_cache(maxsize=1)
def _installed_dirs() -> tuple:
    paths = sysconfig.get_paths()
    dirs = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")} | {sys.prefix, sys.base_prefix}
    return tuple(sorted(os.path.realpath(d) + os.sep for d in dirs if d))


def _gui_pyplot() -> bool:
    """Whether importing pyplot now could start a GUI backend (anything but the inline one)."""
    mpl = sys.modules.get("matplotlib")
    if mpl is not None:
        backend = getattr(mpl.rcParams, "_get_backend_or_none", lambda: None)()
        return backend is not None and backend != _INLINE
    return os.environ.get("MPLBACKEND") != _INLINE  # (ipykernel sets it; elsewhere pyplot may pick a GUI)


def _installed(name: str, dirs: tuple) -> bool:
    top = name.partition(".")[0]
    if top in sys.builtin_module_names:
        return True
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    where = spec.origin if spec.has_location else next(iter(spec.submodule_search_locations or ()), None)
    return bool(where) and os.path.realpath(where).startswith(dirs)


def _import_all(names: list) -> None:
    dirs = _installed_dirs()
    for name in names:
        if name in sys.modules or not _installed(name, dirs):
            continue
        if name.partition(".")[0] in ("matplotlib", "pylab") and (name != "matplotlib") and _gui_pyplot():
            continue
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - the binding after the cell imports it again and says why
            pass


def start(shell, cell_source: str) -> None:
    """Begin importing, on a thread, what the cell imports that the kernel will bind after it (the
    cell's imports as ``uses`` parsed them for its versions: no second parse)."""
    if "import" not in cell_source or any(w in cell_source for w in _INSTALLS):
        return
    names = [n for n in uses.top_level_modules(shell, cell_source) if n not in sys.modules]
    if names:
        threading.Thread(target=_import_all, args=(names,), name="jupyter-gpu-prefetch", daemon=True).start()
