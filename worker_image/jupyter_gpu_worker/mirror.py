"""The kernel's directory, mirrored on a worker that cannot see it (the kernel's notebook/files.py
is the other side).

A request's ``sync`` names the kernel's directory (``root``) and what differs from what this worker
holds of it.  Each root has a mirror here, under one private directory of this worker process
(removed when it exits, and a session's mirrors when another session's cell arrives: one kernel's
files are never seen by the next), watched by a ``filetree.Tree`` so that after the cell what it
created, changed or deleted is found without a re-scan.  ``base`` is the digest the kernel believes
the mirror has; "" means "from nothing" (the mirror is emptied first).  A mirror that does not
match ``base`` asks for everything again (the cell is resent with the whole directory).
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from jupyter_gpu._wire import filetree, settings
from jupyter_gpu._wire.serialization import human_size


PREFIX = "jupyter-gpu-files-"  # + the worker's id + "-" + random: its private directory of mirrors


class Mirror:
    def __init__(self, path: str, known: dict | None = None):
        """``known``: the files just written into the new directory at ``path`` (filetree.Tree)."""
        self.path = path
        os.makedirs(path, exist_ok=True)
        self.tree = filetree.Tree(path, known=known)  # watching from here on
        self.digest_before = ""  # the mirror's digest as the cell began


class Mirrors:
    """This worker's mirrors of kernels' directories, one per root."""

    def __init__(self):
        self.base: str | None = None  # this worker's private directory (made on first use)
        self.mirrors: dict[str, Mirror] = {}
        self.current: Mirror | None = None  # the mirror the running cell started in
        self.root: str | None = None

    def _dir(self) -> str:
        if self.base is None:
            # named by the worker: its runtime removes what a killed worker left (local.py)
            worker = settings.WORKER_ID.get() or str(os.getpid())
            self.base = tempfile.mkdtemp(prefix=f"{PREFIX}{worker}-")
            atexit.register(self.remove)
        return self.base

    def remove(self) -> None:
        """The worker exits: its mirrors go (the agent calls this before its os._exit)."""
        for m in self.mirrors.values():
            m.tree.close()
        self.mirrors.clear()
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def path_of(self, root: str) -> str:
        """Where root is mirrored: at its own absolute path under this worker's directory, so the
        cell's os.getcwd() ends as the kernel's does and a `chdir("..")` out of it is still a
        directory of the kernel's (the kernel follows; its next cell syncs that one)."""
        return os.path.normpath(self._dir() + os.path.abspath(root))

    def receive(self, sync: dict, buffers: list, stream=None) -> str | None:
        """Bring the mirror of ``sync["root"]`` up to what the kernel sent; the mirror's path, or
        None when it does not hold what the kernel believes (the cell must be sent with everything).
        ``stream`` (a ``framing.Assembly``): the buffers are still arriving (filetree.apply writes each
        file once its bytes are here, and lets each buffer go once its files are written).  A mirror whose writes failed part way (a full disk, the request cut off) is
        dropped: it is never taken for what the kernel sent."""
        root = sync["root"]
        m = self.mirrors.get(root)
        put, drop = sync.get("put") or [], sync.get("drop") or []
        if sync.get("base", "") == "":  # from nothing
            path = self.path_of(root)
            for other in [r for r, o in self.mirrors.items() if _nested(o.path, path)]:
                self.mirrors.pop(other).tree.close()  # one inside this one, or this one inside it
            shutil.rmtree(path, ignore_errors=True)
            os.makedirs(path)
            # written before its Tree is made, which takes each file written as the entry says (its
            # stat agrees) in its first scan: a Tree watching while apply wrote had an event for each
            # file to reconcile after adopting it - ~0.25 s of a first sync of 10,000 files
            skipped = self._apply(path, put, buffers, drop, stream, sync) if put or drop else set()
            m = self.mirrors[root] = Mirror(path, {e[0]: e[1:4] for e in put if e[0] not in skipped})
        elif m is None:
            return None
        else:
            m.tree.refresh()
            if m.tree.digest != sync["base"]:
                return None
            if put or drop:
                skipped = self._apply(m.path, put, buffers, drop, stream, sync)
                for e in put:
                    if e[0] not in skipped:
                        m.tree.adopt(e[0], (e[1], e[2], e[3]))
                for rel in drop:
                    m.tree.forget(rel)
                m.tree.refresh()  # our own writes' events: their stat matches what was adopted
        m.digest_before = m.tree.digest
        self.current, self.root = m, root
        return m.path

    def _apply(self, path: str, put: list, buffers: list, drop: list, stream, sync: dict) -> set:
        """Write ``put`` (and delete ``drop``) in the mirror at ``path``; the rels left out (read while
        they changed: the kernel knows which, and says so).  A mirror whose writes failed part way
        goes, and is forgotten."""
        try:  # nobody reads the mirror meanwhile: written in place
            return set(filetree.apply(path, put, buffers, drop, atomic=False, threads=4, stream=stream,
                                      check=bool(sync.get("check"))))
        except BaseException:
            m = self.mirrors.pop(sync["root"], None)
            if m is not None:
                m.tree.close()
            shutil.rmtree(path, ignore_errors=True)
            raise

    def began(self) -> None:
        """The cell begins: what its mirror holds now is what it changes from."""
        m = self.current
        if m is not None:
            m.tree.mark()  # what the cell changes is kept as it changes (O(changes), not a copy)

    def after(self) -> tuple[dict, list]:
        """After the cell: ``Done.files`` (what it changed in the mirror, and the mirror's digest)
        and the files' buffers."""
        m, self.current = self.current, None
        if m is None:
            return {}, []
        m.tree.refresh()
        put, drop = m.tree.since_mark()
        if m.tree.digest == m.digest_before or not (put or drop):
            return {"digest": m.tree.digest}, []
        size = sum(m.tree.manifest[rel][0] for rel in put)
        cap = filetree.sync_limit()
        if cap and size > cap:  # nothing comes back; the next cell starts from the kernel's files
            over = (f"the cell wrote {human_size(size)} into the notebook's directory on the worker, over "
                    f"${settings.SYNC_LIMIT.name}={human_size(cap)}: none of it was brought back "
                    f"({len(put)} files, e.g. {', '.join(put[:3])}); write big results elsewhere, or raise the limit")
            return {"digest": "", "over": over}, []
        entries, buffers = filetree.pack(m.path, put, m.tree.manifest)
        return {"digest": m.tree.digest, "put": entries, "drop": drop}, buffers

    def kernel_path(self, path: str) -> str | None:
        """A directory under this worker's mirrors, as the kernel's path (None: elsewhere)."""
        if self.base is None or not _nested(path, self.base) or path == self.base:
            return None
        return path[len(self.base):]

    def mirror_path(self, path: str) -> str | None:
        """A kernel path under the synced directory, as its mirror's; a relative one as it is;
        None for one outside it (not on this worker's filesystem)."""
        m = self.mirrors.get(self.root) if self.root else None
        if m is None or not os.path.isabs(path):
            return path
        rel = os.path.relpath(path, self.root)
        return None if rel.startswith(os.pardir) else os.path.normpath(os.path.join(m.path, rel))

    def clear(self) -> None:
        """Another session's cell: no mirror of the previous kernel stays."""
        for m in self.mirrors.values():
            m.tree.close()
            shutil.rmtree(m.path, ignore_errors=True)
        self.mirrors.clear()
        self.current = self.root = None


def _nested(a: str, b: str) -> bool:
    """One of the two directories is the other or inside it."""
    a, b = os.path.join(a, ""), os.path.join(b, "")
    return a.startswith(b) or b.startswith(a)
