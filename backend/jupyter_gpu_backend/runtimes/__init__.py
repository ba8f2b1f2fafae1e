"""How workers are started.  A runtime (the interface: ``base.Runtime``) offers device types and
starts and stops workers: ``local`` processes, ``docker`` containers, ``ray`` actors."""
from __future__ import annotations

from jupyter_gpu_backend.runtimes.base import Runtime
from jupyter_gpu_backend.runtimes.local import LocalRuntime


def _ray(worker_url, images=None):
    from jupyter_gpu_backend.runtimes.ray_runtime import RayRuntime  # ray is optional: imported only when asked for

    return RayRuntime(worker_url, images=images)


def _docker(worker_url, images=None, mounts=()):
    from jupyter_gpu_backend.runtimes.docker_runtime import DockerRuntime  # the docker SDK is optional too

    return DockerRuntime(worker_url, images=images, mounts=mounts)


RUNTIMES = {"local": LocalRuntime, "ray": _ray, "docker": _docker}


def make_runtime(name: str, worker_url: str, images: dict | None = None, docker_mounts=(), prestarted=None) -> Runtime:
    """The runtime ``name``; ``images``: the named worker images it starts workers from (images.py);
    ``docker_mounts``: host directories every docker container sees (the other runtimes see the host's);
    ``prestarted``: the local runtime's worker spawned before the backend's imports (prestart.py)."""
    try:
        cls = RUNTIMES[name]
    except KeyError:
        raise ValueError(f"unknown runtime {name!r}; available: {', '.join(sorted(RUNTIMES))}") from None
    if name == "docker":
        return cls(worker_url, images=images, mounts=docker_mounts)
    if name == "local":
        return cls(worker_url, images=images, prestarted=prestarted)
    return cls(worker_url, images=images)
