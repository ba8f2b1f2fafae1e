"""The kernel's environment variables and code directories, as a request sends them (the kernel's
notebook/environ.py says which): set here before the cell, and undone when the kernel no longer
has them or another session's cell arrives (the worker's own value comes back)."""
from __future__ import annotations

import importlib
import os
import sys

_UNSET = object()


class KernelEnviron:
    def __init__(self):
        self.env: dict = {}  # what the kernel's requests set
        self.saved: dict = {}  # name -> the worker's own value before (_UNSET: it had none)
        self.paths: list = []  # the kernel's entries, as last asked
        self.added: list = []  # those this added to sys.path (the others were there already)

    def apply(self, env: dict | None, paths: list | None, mirror=None) -> None:
        """Before a cell: the request's ``env`` and ``path``; ``mirror(path)`` maps a directory of
        a synced kernel directory to its mirror here (None: not synced)."""
        if env is not None and env != self.env:
            for name in [n for n in self.env if n not in env]:
                self._restore(name)
            for name, value in env.items():
                if name not in self.saved:
                    self.saved[name] = os.environ.get(name, _UNSET)
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            self.env = dict(env)
        wanted = [p for p in (mirror(p) if mirror else p for p in (paths or ())) if p is not None]
        if wanted != self.paths:
            for p in self.added:
                if p in sys.path:
                    sys.path.remove(p)
            at = 1 if sys.path and sys.path[0] == "" else 0  # after '' (the notebook's directory)
            self.added = [p for p in dict.fromkeys(wanted) if p not in sys.path]  # never one the worker has itself
            sys.path[at:at] = self.added
            self.paths = wanted
            importlib.invalidate_caches()

    def _restore(self, name: str) -> None:
        old = self.saved.pop(name, _UNSET)
        if old is _UNSET:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old

    def reset(self) -> None:
        """Another session: nothing of the previous kernel's stays."""
        for name in list(self.saved):
            self._restore(name)
        self.env = {}
        self.apply(None, [])
