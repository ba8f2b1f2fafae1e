"""The `gpu=` option: a GPU type, a fallback list ("H100,A100,cpu"), and a device count ("A100:2")."""
from __future__ import annotations

import os

from .errors import NoSuchDevice

# Types tried after every type a cell asks for, e.g. "cpu" (`jupyter-gpu run --gpu-fallback cpu`).
FALLBACK_ENV = "JUPYTER_GPU_FALLBACK"


def parse(spec: str) -> list[tuple[str, int]]:
    """'H100:2, A100' -> [('H100', 2), ('A100', 1)]."""
    choices = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, count = part.partition(":")
        if count and not (count.isdigit() and int(count) > 0):
            raise NoSuchDevice(f"bad device count in {part!r}: use e.g. A100:2")
        choices.append((name.strip(), int(count or 1)))
    if not choices:
        raise NoSuchDevice(f"no GPU type in {spec!r}")
    return choices


def choose(spec: str, offers: list[str], per_worker: int = 1) -> str:
    """The first type in ``spec`` that is offered, in order of preference; NoSuchDevice otherwise."""
    choices = parse(spec)
    for name, count in choices:
        if name in offers and count <= per_worker:
            return name
    wanted = ", ".join(f"{n}:{c}" if c > 1 else n for n, c in choices)
    many = [f"{n}:{c}" for n, c in choices if c > per_worker and n in offers]
    extra = f" ({', '.join(many)}: this runtime gives a worker at most {per_worker} device(s))" if many else ""
    raise NoSuchDevice(f"no runtime offers {wanted}{extra}; offered: {', '.join(offers)}")


def with_fallback(spec: str, fallback: str | None = None) -> str:
    """``spec`` with the fallback types (default: ``$JUPYTER_GPU_FALLBACK``) appended, last in order."""
    fallback = os.environ.get(FALLBACK_ENV, "") if fallback is None else fallback
    if not fallback.strip():
        return spec
    asked = {name for name, _ in parse(spec)}
    extra = [name for name, _ in parse(fallback) if name not in asked]
    return ",".join([spec, *extra])
