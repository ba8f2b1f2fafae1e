"""The environment handshake of a function's first call to a worker (kernel: functions/handshake.py
says what the function needs; worker: calls.py compares it here): versions by name, the rows that
differ, and the table a user reads."""
from __future__ import annotations

import functools
import importlib.metadata
import sys


@functools.lru_cache(maxsize=512)
def version(top: str) -> str | None:
    """The installed version of the distribution that provides import name ``top`` (None: none)."""
    for dist in importlib.metadata.packages_distributions().get(top, [top]):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


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
    for top, theirs in sorted((kernel.get("packages") or {}).items()):
        v = version(top)
        if v != theirs:
            rows.append((top, theirs, v))
    return rows


def table(rows: list, name: str) -> str:
    """The rows as the table a cell shows, and what to do."""
    width = max(len(r[0]) for r in rows)
    lines = [f"jupyter-gpu: the worker's environment differs from the kernel's in what {name} uses:",
             f"  {'':<{width}}  {'kernel':<12} worker"]
    lines += [f"  {what:<{width}}  {here or '-':<12} {there or 'not installed'}" for what, here, there in rows]
    lines.append("  (install the kernel's versions in the worker's image, or the worker's in the kernel: "
                 "a function pickled by one version may not load, or behave the same, under another)")
    return "\n".join(lines) + "\n"
