"""The environment handshake of a function's first call to a worker (kernel: functions/handshake.py
says what the function needs; worker: calls.py compares it here): versions by name, the rows that
differ, and the table a user reads."""
from __future__ import annotations

import sys

from jupyter_gpu._wire import versions

_installed = versions.Installed()  # the kernel's: what it has installed
_here = versions.Loaded()  # the worker's: what a call gets here, loaded or installed


def version(top: str) -> str | None:
    """The installed version of the distribution that provides import name ``top`` (None: none),
    as of the last ``refresh()``."""
    return _installed.version(top)


def distribution(top: str):
    """The installed distribution that provides import name ``top`` (None: none)."""
    return _installed.distribution(top)


def refresh() -> None:
    """Look again at the environment (one stat): a `%pip install` since is seen."""
    _installed.refresh()


def differences(kernel: dict) -> list:
    """[(what, the kernel's, this process's)] where this process differs from ``kernel`` (the
    kernel's ``environment()``): Python major.minor, cloudpickle, each package (None: not installed)."""
    import cloudpickle

    rows = []
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if kernel.get("python") and kernel["python"] != here:
        rows.append(("python", kernel["python"], here))
    mine = getattr(cloudpickle, "__version__", "?")
    if kernel.get("cloudpickle") and kernel["cloudpickle"] != mine:
        rows.append(("cloudpickle", kernel["cloudpickle"], mine))
    _here.refresh()
    for top, theirs in sorted((kernel.get("packages") or {}).items()):
        v = _here.here(top)
        if v != theirs:
            rows.append((top, theirs, v))
    return rows


def table(rows: list, name: str, advice: str | None = None) -> str:
    """The rows as the table a cell shows, and what to do: rows of (what, the kernel's, the
    worker's), or with a fourth column, what to do about that row (a cell's, _wire/versions.py)."""
    cells = [(r[0], r[1] or "-", r[2] or "not installed", *r[3:]) for r in rows]
    width = max(len(r[0]) for r in cells)
    kw = max(12, *(len(r[1]) for r in cells))
    todo = any(len(r) > 3 for r in cells)
    ww = max(12, *(len(r[2]) for r in cells)) if todo else 0
    lines = [f"jupyter-gpu: the worker's environment differs from the kernel's in what {name} uses:",
             f"  {'':<{width}}  {'kernel':<{kw}} {'worker':<{ww}}{' what to do' if todo else ''}".rstrip()]
    lines += [f"  {r[0]:<{width}}  {r[1]:<{kw}} {r[2]:<{ww}}{' ' + r[3] if len(r) > 3 else ''}".rstrip() for r in cells]
    lines.append(advice or "  (install the kernel's versions in the worker's image, or the worker's in the kernel: "
                           "a function pickled by one version may not load, or behave the same, under another)")
    return "\n".join(lines) + "\n"


CELL_ADVICE = "  (the cell runs now, with the worker's versions)"
_followed: list = [None]  # the directory of the kernel's versions this worker's sys.path has (follow)


def follow(path: str) -> None:
    """Put ``path`` (the backend's directory of the kernel's versions of what the notebook uses that
    this worker's image lacks or has at others: scheduling/follow.py) before this worker's
    site-packages, in place of the one before: what the cell imports from now on is the kernel's.
    A module loaded already stays as it is (the table says so).  The same path again: nothing; "":
    none any more (the kernel has the image's versions again)."""
    if path == (_followed[0] or ""):
        return
    if _followed[0] in sys.path:
        sys.path.remove(_followed[0])
    if path:
        at = next((i for i, p in enumerate(sys.path) if p.endswith(("site-packages", "dist-packages"))), len(sys.path))
        sys.path.insert(at, path)
    _followed[0] = path or None
    _here.reset()


def cell_table(kernel: dict) -> str | None:
    """A cell's table (the kernel's {module: version} of what it imports and sends, ``Execute.versions``),
    None when the worker has the same versions; answered from memory while nothing changed."""
    rows = _here.differences(kernel)
    return table(rows, "this cell", CELL_ADVICE) if rows else None
