"""A cell runs in its kernel's working directory, where this worker sees it.

Each request names the kernel's current directory (``Execute.cwd``).  On the same filesystem (the
local runtime; a worker on the kernel's host) the worker enters it, so relative paths and modules
beside the notebook (`open("data.csv")`, `import helper`: '' is on ``sys.path``, as in a kernel)
resolve as in a local cell, and two kernels in two folders never see each other's files.  A cell
that changes directory (`os.chdir`, `%cd`) says where it went (``Done.cwd``) and the kernel follows,
as after a local cell.  Where the kernel's directory is not on this worker's filesystem (another
node, a container without the bind mount), the cell runs where the worker is, and says so once.
"""
from __future__ import annotations

import importlib
import os
import sys


class WorkDir:
    def __init__(self):
        self.entered: str | None = None  # the kernel's directory this worker is in (None: not entered)
        self._told: set = set()
        if "" not in sys.path:
            sys.path.insert(0, "")  # modules beside the notebook, as a kernel imports them

    def enter(self, cwd: str | None, say) -> None:
        """Before a cell: go to the kernel's directory ``cwd``; ``say(text)`` writes to the cell's
        stderr (once per directory this worker cannot see)."""
        if cwd is None or cwd == self.entered:
            return  # the same directory as the last cell: no system call (a warm cell's path)
        try:
            os.chdir(cwd)
        except OSError as e:
            self.entered = None
            if cwd not in self._told:
                self._told.add(cwd)
                say(f"jupyter-gpu: the kernel's directory {cwd} is not on this worker's filesystem "
                    f"({e.strerror}); the cell runs in {os.getcwd()}, and files beside the notebook "
                    "are not there\n")
            return
        importlib.invalidate_caches()  # a module file beside the notebook, found in the new directory
        self.entered = cwd

    def moved(self) -> str | None:
        """After a cell: the directory it changed to, if it did (the kernel follows)."""
        if self.entered is None:
            return None
        now = os.getcwd()
        if now == self.entered:
            return None
        self.entered = now
        return now
