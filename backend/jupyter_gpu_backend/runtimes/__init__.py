"""How workers are started.  A runtime offers device types and starts/stops worker processes."""
from __future__ import annotations

from .local import LocalRuntime

RUNTIMES = {"local": LocalRuntime}


def make_runtime(name: str, worker_url: str):
    try:
        cls = RUNTIMES[name]
    except KeyError:
        raise ValueError(f"unknown runtime {name!r}; available: {', '.join(sorted(RUNTIMES))}") from None
    return cls(worker_url)
