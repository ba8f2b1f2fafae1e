"""A cell runs in its kernel's working directory, where this worker sees it.

Each request names the kernel's current directory (``Execute.cwd``).  On the same filesystem (the
local runtime; a worker on the kernel's host) the worker enters it, so relative paths and modules
beside the notebook (`open("data.csv")`, `import helper`: '' is on ``sys.path``, as in a kernel)
resolve as in a local cell, and two kernels in two folders never see each other's files.  A cell
that changes directory (`os.chdir`, `%cd`) says where it went (``Done.cwd``) and the kernel follows,
as after a local cell.  Where the kernel's directory is not on this worker's filesystem (another
node, a container without the bind mount), or another directory has its path here (a container's
own /tmp: the kernel sends its directory's identity, ``Execute.cwd_id``), the cell runs where the
worker is, and says so once.
"""
from __future__ import annotations

import importlib
import os
import sys


class WorkDir:
    def __init__(self):
        self.entered: str | None = None  # the kernel's directory this worker is in (None: not entered)
        self._told: set = set()
        self.unseen = ""  # why the last directory ``sees`` refused is not the kernel's, in words
        if "" not in sys.path:
            sys.path.insert(0, "")  # modules beside the notebook, as a kernel imports them

    def sees(self, cwd: str, cwd_id=None) -> bool:
        """True when ``cwd`` here is the kernel's directory: it exists and, where the kernel sent its
        identity ``cwd_id`` ([st_dev, st_ino]), it is that very directory (a bind mount keeps both),
        not another one at the same path (a container's own /tmp).  Else ``self.unseen`` says why."""
        try:
            st = os.stat(cwd)
        except OSError as e:
            self.unseen = f"the kernel's directory {cwd} is not on this worker's filesystem ({e.strerror})"
            return False
        if cwd_id is not None and [st.st_dev, st.st_ino] != list(cwd_id):
            self.unseen = f"{cwd} is not this worker's view of the kernel's directory (another directory has that path here)"
            return False
        return True

    def enter(self, cwd: str | None, say, cwd_id=None) -> None:
        """Before a cell: go to the kernel's directory ``cwd`` (identity ``cwd_id``, see ``sees``);
        ``say(text)`` writes to the cell's stderr (once per directory this worker cannot see)."""
        if cwd is None or cwd == self.entered:
            return  # the same directory as the last cell: no system call (a warm cell's path)
        if self.sees(cwd, cwd_id):
            try:
                os.chdir(cwd)
            except OSError as e:  # there, but not for this worker's user
                self.unseen = f"the kernel's directory {cwd} is not open to this worker ({e.strerror})"
            else:
                importlib.invalidate_caches()  # a module file beside the notebook, found in the new directory
                self.entered = cwd
                return
        self.entered = None
        if cwd not in self._told:
            self._told.add(cwd)
            say(f"jupyter-gpu: {self.unseen}; the cell runs in {os.getcwd()}, "
                "and files beside the notebook are not there\n")

    def moved(self) -> str | None:
        """After a cell: the directory it changed to, if it did (the kernel follows)."""
        if self.entered is None:
            return None
        try:
            now = os.getcwd()
        except OSError:  # the cell removed the directory it is in: nowhere for the kernel to follow
            return None
        if now == self.entered:
            return None
        self.entered = now
        return now
