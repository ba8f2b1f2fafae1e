"""Linux's inotify through ctypes, for filetree.Tree: watches on a root's directories, and which paths
had events since the last look.  Stdlib only (the worker imports it); ``Watches.open`` is None where
there is no inotify (not Linux, no libc symbol, max_user_instances spent), and the tree stats instead.
"""
from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys

IN_MOVED_FROM, IN_DELETE_SELF, IN_MOVE_SELF, IN_Q_OVERFLOW, IN_IGNORED, IN_ISDIR = (
    0x40, 0x400, 0x800, 0x4000, 0x8000, 0x40000000)
# MODIFY ATTRIB CLOSE_WRITE MOVED_FROM MOVED_TO CREATE DELETE DELETE_SELF MOVE_SELF | ONLYDIR DONT_FOLLOW EXCL_UNLINK
WATCH = 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800 | 0x1000000 | 0x2000000 | 0x4000000
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name
_libc = None


def _lib():
    """libc with inotify's three calls typed, or None where there is none."""
    global _libc
    if _libc is None:
        _libc = False
        try:
            lib = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
            lib.inotify_init1.argtypes, lib.inotify_init1.restype = [ctypes.c_int], ctypes.c_int
            lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
            lib.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
            _libc = lib
        except (OSError, AttributeError):
            pass
    return _libc or None


class Watches:
    """One inotify instance watching directories of ``root`` (rel '' = root itself)."""

    fd = -1

    @classmethod
    def open(cls, root: str):
        lib = _lib()
        fd = lib.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC) if lib else -1  # = IN_NONBLOCK | IN_CLOEXEC
        return cls(root, lib, fd) if fd >= 0 else None

    def __init__(self, root: str, lib, fd: int):
        self.root, self._lib, self.fd = root, lib, fd
        self._wds: dict[int, str] = {}  # watch descriptor -> directory rel
        self.dirs: dict[str, int] = {}  # the reverse

    def add(self, d: str) -> bool:
        """Watch directory d; False when watches ran out (ENOSPC: max_user_watches) and inotify must be
        given up.  A directory gone or unreadable is not watched, and nothing of it is kept anyway."""
        wd = self._lib.inotify_add_watch(self.fd, os.fsencode(os.path.join(self.root, d)), WATCH)
        if wd < 0:
            return ctypes.get_errno() != errno.ENOSPC
        if self._wds.get(wd, d) != d:  # the same directory under a new name (moved)
            self._forget(wd)
        self._wds[wd], self.dirs[d] = d, wd
        return True

    def remove(self, rel: str, keep=()) -> None:
        """Stop watching rel and every directory below it (but those in keep)."""
        prefix = rel + "/" if rel else ""
        for d in [d for d in self.dirs if (d == rel or d.startswith(prefix)) and d not in keep]:
            self._lib.inotify_rm_watch(self.fd, self._forget(self.dirs[d]))

    def read(self):
        """({path that had events: whether an event said it is (or was) a directory}, whether only a full
        rescan will do), or None when nothing happened: then it cost one failed non-blocking read (EAGAIN)."""
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return None
        dirty, full = {}, False
        while data:
            off = 0
            while off < len(data):
                wd, mask, _cookie, n = _EVENT.unpack_from(data, off)
                name = os.fsdecode(data[off + 16:off + 16 + n].split(b"\0", 1)[0])
                off += 16 + n
                d = self._wds.get(wd)
                if mask & IN_Q_OVERFLOW:
                    full = True  # the kernel dropped events: only a rescan knows what changed
                elif d is None:
                    continue  # a watch removed since (after our rm_watch; a deleted directory's IN_IGNORED)
                elif mask & IN_IGNORED:
                    self._forget(wd)
                elif name:
                    rel = f"{d}/{name}" if d else name
                    dirty[rel] = dirty.get(rel, False) or bool(mask & IN_ISDIR)
                    if mask & IN_MOVED_FROM and mask & IN_ISDIR:
                        self.remove(rel)  # its watches moved with it: a directory under this name is new
                elif not d and mask & (IN_DELETE_SELF | IN_MOVE_SELF):
                    full = True  # the root itself went
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
        return dirty, full

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    __del__ = close  # an inotify instance is scarce (max_user_instances, 128 a user): never leak one

    def _forget(self, wd: int) -> int:
        d = self._wds.pop(wd, None)
        if d is not None and self.dirs.get(d) == wd:
            del self.dirs[d]
        return wd
