"""How workers are started.  A runtime (the interface: ``base.Runtime``) offers device types and
starts and stops workers: ``local`` processes, ``docker`` containers, ``ray`` actors."""
from __future__ import annotations

from jupyter_gpu_backend.runtimes.base import Runtime
from jupyter_gpu_backend.runtimes.local import LocalRuntime


def _ray(worker_url, images=None):
    from jupyter_gpu_backend.runtimes.ray_runtime import RayRuntime  # ray is optional: imported only when asked for

    return RayRuntime(worker_url, images=images)


def _docker(worker_url, images=None):
    from jupyter_gpu_backend.runtimes.docker_runtime import DockerRuntime  # the docker SDK is optional too

    return DockerRuntime(worker_url, images=images)


RUNTIMES = {"local": LocalRuntime, "ray": _ray, "docker": _docker}


def make_runtime(name: str, worker_url: str, images: dict | None = None) -> Runtime:
    """The runtime ``name``; ``images``: the named worker images it starts workers from (images.py)."""
    try:
        cls = RUNTIMES[name]
    except KeyError:
        raise ValueError(f"unknown runtime {name!r}; available: {', '.join(sorted(RUNTIMES))}") from None
    return cls(worker_url, images=images)
