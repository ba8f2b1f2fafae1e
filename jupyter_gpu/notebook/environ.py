"""What a `%%gpu` cell sees of its kernel's process besides names and files: the environment
variables the notebook set, and the directories of the notebook's own code on ``sys.path``.

Environment (decision in docs/decisions.md, 2026-12-06): a worker does not get the kernel's whole
environment (what the kernel inherited from the shell or the Jupyter server: tokens, cloud
credentials, PATH, which belong to that machine), only what the notebook itself set or changed
since the extension loaded (``%env KEY=value``, ``os.environ[...] = ...``, ``del os.environ[...]``),
as the complete set with every request, so a worker that replaced another one has it too.  Never
sent: ``JUPYTER_GPU_*`` and the device-selection variables, which are the worker's own.

``sys.path``: the entries the notebook added since the extension loaded (not the interpreter's
own, site-packages, or the directories of packages installed in development mode, which the
worker's environment has as it has: issue 23's concern): ``sys.path.append("src")`` or
``sys.path.insert(0, "/home/me/lib")`` in the notebook makes those modules importable in a
`%%gpu` cell too.

Both are compared with their previous values by one equality test per cell (~1 µs each).
"""
from __future__ import annotations

import functools
import os
import site
import sys
import sysconfig

NOT_SENT = frozenset({"CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
                      "HIP_VISIBLE_DEVICES", "PWD", "OLDPWD", "_"})


@functools.lru_cache(maxsize=1)
def _interpreter_dirs() -> tuple:
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, sysconfig.get_paths()["stdlib"]}
    try:
        dirs.update(site.getsitepackages())
        dirs.add(site.getusersitepackages())
    except AttributeError:  # a virtualenv's old site.py
        pass
    return tuple(os.path.join(os.path.realpath(d), "") for d in dirs if d)


def interpreters(path: str) -> bool:
    """Whether a file or directory is the interpreter's own (stdlib, site-packages), which a
    worker's environment has (or differs in: issue 23's concern), not the notebook's code."""
    return os.path.join(os.path.realpath(path), "").startswith(_interpreter_dirs())


def sent(name: str) -> bool:
    return name not in NOT_SENT and not name.startswith("JUPYTER_GPU_")


class KernelEnviron:
    def __init__(self):
        self.start = dict(os.environ)  # what the kernel inherited: not the notebook's to send
        self._env_seen: dict | None = None
        self._env: dict = {}
        self._ever = False  # once the notebook set one, the (possibly empty) set goes with every request
        self._path_seen: list | None = None
        self._path_start = frozenset(p for p in sys.path if p)  # the interpreter's and its .pth files'
        self._path: list = []

    def env(self) -> dict:
        """The variables the notebook set (value) or unset (None) since the kernel started."""
        data = os.environ._data  # bytes -> bytes: one dict comparison when nothing changed
        if self._env_seen is not None and data == self._env_seen:
            return self._env
        self._env_seen = dict(data)
        env = {k: v for k, v in os.environ.items() if self.start.get(k) != v and sent(k)}
        env.update({k: None for k in self.start if k not in os.environ and sent(k)})
        self._env = env
        return env

    def path(self) -> list:
        """The notebook's own code directories on sys.path, in its order."""
        if self._path_seen is not None and sys.path == self._path_seen:
            return self._path
        self._path_seen = list(sys.path)
        self._path = [p for p in sys.path if isinstance(p, str) and p and p not in self._path_start
                      and not interpreters(p) and not p.endswith((".zip", ".egg"))]
        return self._path

    def fields(self) -> dict:
        """The request's ``env`` and ``path`` (absent while empty)."""
        out = {}
        env = self.env()
        if env or self._ever:
            self._ever = True
            out["env"] = env
        path = self.path()
        if path:
            out["path"] = path
        return out
