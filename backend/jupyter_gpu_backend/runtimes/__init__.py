"""How workers are started.  A runtime offers device types and starts/stops worker processes."""
from __future__ import annotations

from .local import LocalRuntime


def _ray(worker_url):
    from .ray_runtime import RayRuntime  # ray is optional: imported only when asked for

    return RayRuntime(worker_url)


def _docker(worker_url):
    from .docker_runtime import DockerRuntime  # the docker SDK is optional too

    return DockerRuntime(worker_url)


RUNTIMES = {"local": LocalRuntime, "ray": _ray, "docker": _docker}


def make_runtime(name: str, worker_url: str):
    try:
        cls = RUNTIMES[name]
    except KeyError:
        raise ValueError(f"unknown runtime {name!r}; available: {', '.join(sorted(RUNTIMES))}") from None
    return cls(worker_url)
