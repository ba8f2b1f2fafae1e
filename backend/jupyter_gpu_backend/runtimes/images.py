"""Named worker images: ``[images.NAME]`` tables of serve's ``--config`` file.

An image is what a worker starts from, chosen per cell with ``%%gpu --image NAME`` (Modal's
``image=``).  What it can say, and what each runtime makes of it:

- ``env = {KEY = "value"}``: environment variables of the worker (every runtime);
- ``preload = ["module", ...]``: imported before the first cell: in the image's zygote on the
  ``local`` runtime (a cold start is still a fork), at worker start elsewhere;
- ``python = "/path/to/python"``: ``local`` only: the interpreter of the image's zygote and
  workers (another virtualenv; it must have ``jupyter_gpu_worker`` importable);
- ``base = "image:tag"``: ``docker`` only: the worker image is built on this base;
- ``runtime_env = {...}``: ``ray`` only: the actor's Ray ``runtime_env``.

``default`` always exists (the backend's own interpreter / the default base); it may be given a
table too.  An unknown key, a value of the wrong type or a key the runtime cannot honour is refused
at start, naming the key, so a typo never silently runs a cell somewhere else than meant.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from jupyter_gpu._wire.pools import DEFAULT_IMAGE, check_name
from jupyter_gpu._wire import settings

PRELOAD_ENV = settings.IMAGE_PRELOAD.name  # the worker imports these at start (agent.main)
COMMON_KEYS = ("env", "preload")
RUNTIME_KEYS = {"python": "local", "base": "docker", "runtime_env": "ray"}  # key -> the runtime it is for


@dataclass(frozen=True)
class WorkerImage:
    name: str = DEFAULT_IMAGE
    env: dict = field(default_factory=dict)
    preload: tuple = ()
    python: str | None = None
    base: str | None = None
    runtime_env: dict | None = None
    # local: the image whose zygote forks its workers (a built jupyter_gpu.Image that only adds packages
    # to the default's: its own site-packages go first on sys.path, JUPYTER_GPU_IMAGE_SITES); None: its own
    fork_from: str | None = None
    # docker: the image its containers run as it is (a built jupyter_gpu.Image's layer stack, docker_envs.py)
    docker_tag: str | None = None

    def worker_env(self) -> dict:
        """What a worker of this image gets in its environment, on any runtime."""
        env = dict(self.env)
        if self.preload:
            env[PRELOAD_ENV] = ",".join(self.preload)
        return env


def default_images() -> dict[str, WorkerImage]:
    return {DEFAULT_IMAGE: WorkerImage()}


def parse_images(tables: dict, where: str = "--config") -> dict[str, WorkerImage]:
    """``{name: {key: value}}`` (the file's ``[images]``) -> {name: WorkerImage}, with ``default`` always
    there; ValueError naming the image and the key for anything it cannot take."""
    if not isinstance(tables, dict):
        raise ValueError(f"{where}: [images] must hold tables, [images.NAME]")
    images = default_images()
    for name, entry in tables.items():
        try:
            check_name(name)
        except ValueError as e:
            raise ValueError(f"{where}: [images.{name}]: {e}") from None
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: images.{name} must be a table, [images.{name}]")
        unknown = sorted(set(entry) - set(COMMON_KEYS) - set(RUNTIME_KEYS))
        if unknown:
            raise ValueError(f"{where}: [images.{name}] has unknown key {unknown[0]!r}; an image takes "
                             f"{', '.join(COMMON_KEYS + tuple(RUNTIME_KEYS))}")
        env = entry.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise ValueError(f"{where}: [images.{name}] key 'env' must be a table of strings, env = {{KEY = \"value\"}}")
        preload = entry.get("preload", [])
        if not isinstance(preload, list) or not all(isinstance(m, str) and m.strip() for m in preload):
            raise ValueError(f"{where}: [images.{name}] key 'preload' must be a list of module names")
        for key, kind in (("python", str), ("base", str), ("runtime_env", dict)):
            if key in entry and not isinstance(entry[key], kind):
                raise ValueError(f"{where}: [images.{name}] key {key!r} must be a {'string' if kind is str else 'table'}")
        images[name] = WorkerImage(name, dict(env), tuple(m.strip() for m in preload), entry.get("python"),
                             entry.get("base"), entry.get("runtime_env"))
    return images


def check_for_runtime(images: dict[str, WorkerImage], runtime: str) -> None:
    """Refuse (ValueError naming the image and key) what ``runtime`` cannot build."""
    for image in images.values():
        for key, only in RUNTIME_KEYS.items():
            if getattr(image, key) is not None and only != runtime:
                raise ValueError(f"[images.{image.name}] key {key!r} is for the {only} runtime only; "
                                 f"this backend runs the {runtime} runtime")
        if image.python is not None and not (os.path.isfile(image.python) and os.access(image.python, os.X_OK)):
            raise ValueError(f"[images.{image.name}] key 'python': {image.python} is not an executable file")
