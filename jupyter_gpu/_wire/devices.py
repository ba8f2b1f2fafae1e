"""GPU specs: the `gpu=` option (a type, a fallback list "H100,A100,cpu", a device count "A100:2"),
and the catalog type of an NVML device name (the worker and the backend's GPU table both name GPUs so)."""
from __future__ import annotations

from jupyter_gpu.errors import NoSuchDevice
from jupyter_gpu._wire import settings

# Types tried after every type a cell asks for, e.g. "cpu" (`jupyter-gpu run --gpu-fallback cpu`).
FALLBACK_ENV = settings.FALLBACK.name


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


def choose(spec: str, offers: list[str], per_worker: int | dict = 1) -> str:
    """The first type in ``spec`` that is offered, in order of preference; NoSuchDevice otherwise.

    ``per_worker``: the most devices a worker may get, for every type (int) or per type (a dict,
    e.g. the local runtime's {"A100": 2}: the devices of that type it has; 1 where a type is
    missing).  Returns the pool key: the type ("A100"), or "A100:2" for a worker with two.  A cpu
    worker has no devices at all, so "cpu:2" is refused: nothing pretends a CPU is a GPU."""
    choices = parse(spec)

    def most(name: str) -> int:
        if name == "cpu":
            return 1
        return per_worker.get(name, 1) if isinstance(per_worker, dict) else per_worker

    for name, count in choices:
        if name in offers and count <= most(name):
            return name if count == 1 else f"{name}:{count}"
    wanted = ", ".join(f"{n}:{c}" if c > 1 else n for n, c in choices)
    why = []
    for n, c in choices:
        if n not in offers or c <= most(n):
            continue
        if n == "cpu":
            why.append(f"cpu:{c}: a cpu worker has no GPU devices to be given {c} of (it runs on the host's cores)")
        elif isinstance(per_worker, dict):
            why.append(f"{n}:{c}: this runtime gives a worker at most {most(n)} device(s) of type {n}, all it has")
        else:
            why.append(f"{n}:{c}: this runtime gives a worker at most {most(n)} device(s)")
    extra = f" ({'; '.join(why)})" if why else ""
    raise NoSuchDevice(f"no runtime offers {wanted}{extra}; offered: {', '.join(offers)}")


def split(key: str) -> tuple[str, int]:
    """A pool key from `choose` -> (GPU type, devices per worker): 'A100:2' -> ('A100', 2)."""
    name, _, count = key.partition(":")
    return name, int(count or 1)


def with_fallback(spec: str, fallback: str | None = None) -> str:
    """``spec`` with the fallback types (default: ``$JUPYTER_GPU_FALLBACK``) appended, last in order."""
    fallback = settings.FALLBACK.get() if fallback is None else fallback
    if not fallback.strip():
        return spec
    asked = {name for name, _ in parse(spec)}
    extra = [name for name, _ in parse(fallback) if name not in asked]
    return ",".join([spec, *extra])


_KNOWN = ("B200", "H200", "H100", "A100", "L40S", "L40", "A10", "L4", "T4", "A6000", "A5000", "A4000")


def gpu_type_of(name: str) -> str:
    """Map an NVML product name ("NVIDIA H100 80GB HBM3") to a catalog type ("H100")."""
    upper = name.upper()
    for t in _KNOWN:
        if t in upper.replace("-", " ").split() or t in upper:
            if t == "A100" and "80GB" in upper:
                return "A100-80GB"
            return t
    return upper.replace("NVIDIA ", "").strip()
