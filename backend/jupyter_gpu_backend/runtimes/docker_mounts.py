"""Which host directories a worker container sees, and as whom its code runs (the docker runtime).

A container is created with bind mounts, read-write and at the same path, of: the working
directory of the cell whose cold start creates it (the kernel's directory: files beside the
notebook are read and written live, as by a local cell), and the backend's ``docker_mounts``
(config.py: directories every worker container sees, a data set or a projects folder).

What is never mounted, and why: a path that is not an existing directory here (Docker would create
it, as root, on the host); ``/`` and any directory that holds the Docker socket (a container with the
socket is root on the host); the backend's own state (its ledger and the runtime files that hold its
token) and anything inside it; a directory over what the container runs on (``IMAGE_DIRS``: /usr,
/etc, the worker's venv, its HOME... or a folder holding one, such as /opt).  Where a mounted directory holds that state ($HOME does), an empty
tmpfs hides it in the container.  Only the backend's own user's cells are mounted their directory
(the scheduler passes no ``cwd`` for a user of ``--users``: a path a client names is not trusted to
be theirs); those users see ``docker_mounts`` only.  A warm container reused from another directory
does not see it: the worker says so (workdir.py, by the directory's [st_dev, st_ino], which a bind
mount keeps) rather than running the cell elsewhere.

As whom: the owner (uid:gid) of the cell's directory, else of the first ``docker_mounts`` directory,
so what the cell writes there belongs to the host user, as a local cell's would (the image's user
1000 would own it otherwise, or be refused writing).  The image's HOME and venv are writable by any
uid (Dockerfile), so `!pip install` still works; USER and LOGNAME name the host user (no passwd
entry exists in the container for that uid; ``getpass.getuser()`` reads them).  Nothing mounted:
the image's own user, as before.
"""
from __future__ import annotations

import os
import pwd
from dataclasses import dataclass, field

DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
# what the container itself runs on: a host directory mounted over one of them (or over a folder
# holding one) would hide the image's Python, the worker's venv or its HOME, and it would not start
IMAGE_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/usr", "/etc", "/proc", "/sys", "/dev",
              "/opt/jupyter-gpu", "/home/worker")


@dataclass
class Mounts:
    """What ``containers.create`` gets: ``volumes``, ``tmpfs``, ``user`` and extra ``environment``."""

    volumes: dict = field(default_factory=dict)  # host path -> {"bind": the same path, "mode": "rw"}
    tmpfs: dict = field(default_factory=dict)  # the backend's state inside a mounted directory -> options
    user: str | None = None  # "uid:gid"; None: the image's user
    env: dict = field(default_factory=dict)
    refused: dict = field(default_factory=dict)  # a path asked for -> why it is not mounted (logged)

    def create_options(self) -> dict:
        opts = {}
        if self.volumes:
            opts["volumes"] = self.volumes
        if self.tmpfs:
            opts["tmpfs"] = self.tmpfs
        if self.user:
            opts["user"] = self.user
        return opts


def state_dirs() -> list[str]:
    """The backend's own state: the ledger's directory and the runtime files' (its token)."""
    from jupyter_core.paths import jupyter_data_dir, jupyter_runtime_dir

    return [os.path.join(jupyter_data_dir(), "jupyter-gpu"), os.path.join(jupyter_runtime_dir(), "jupyter-gpu")]


def docker_sockets() -> list[str]:
    host = os.environ.get("DOCKER_HOST", "")
    socks = [*DOCKER_SOCKETS, *([host[len("unix://"):]] if host.startswith("unix://") else [])]
    return sorted({os.path.realpath(s) for s in socks})


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def plan(cwd: str | None, extra=(), protected=None, sockets=None) -> Mounts:
    """The mounts of a new container for a cell in ``cwd`` (None: a spare, no cell yet) and the
    configured ``extra`` directories; ``protected`` and ``sockets``: for tests (default: the
    backend's state dirs, Docker's sockets)."""
    protected = [os.path.realpath(p) for p in (state_dirs() if protected is None else protected)]
    sockets = docker_sockets() if sockets is None else [os.path.realpath(s) for s in sockets]
    m = Mounts()
    chosen: list[str] = []
    for asked in ([cwd] if cwd else []) + list(extra):
        path = os.path.realpath(asked)  # the kernel's getcwd() is real already; a configured one may not be
        why = None
        if not os.path.isdir(path):
            why = "not an existing directory here"
        elif path == "/" or any(_inside(s, path) for s in sockets):
            why = "it holds the Docker socket (a container with it is root on the host)"
        elif any(_inside(path, p) for p in protected):
            why = "it is the backend's own state"
        elif any(_inside(i, path) for i in IMAGE_DIRS) or _inside(path, "/opt/jupyter-gpu"):
            why = "it would hide what the container runs on (its system, the worker's venv or HOME)"
        if why:
            m.refused[asked] = why
            continue
        if m.user is None:  # the first directory mounted decides (the cell's own, when it has one)
            st = os.stat(path)
            m.user = f"{st.st_uid}:{st.st_gid}"
            try:
                name = pwd.getpwuid(st.st_uid).pw_name
            except KeyError:
                name = str(st.st_uid)
            m.env = {"USER": name, "LOGNAME": name}
        if not any(_inside(path, c) for c in chosen):  # within one mounted already: seen through it
            chosen = [c for c in chosen if not _inside(c, path)] + [path]
    m.volumes = {c: {"bind": c, "mode": "rw"} for c in chosen}
    # the backend's state inside a mounted directory (a notebook in $HOME): hidden by an empty tmpfs
    m.tmpfs = {p: "size=64k" for p in protected if os.path.isdir(p) and any(_inside(p, c) for c in chosen)}
    return m
