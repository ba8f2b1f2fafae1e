"""The kernel's working directory on a worker that cannot see it: synced, content-addressed.

Where a worker shares the kernel's filesystem (the local runtime; a docker worker with the directory
bind-mounted) it enters the directory itself (the worker's workdir.py) and nothing here runs.  A
worker that does not see it (another node, a container without the mount, a backend configured with
``files = "sync"``) says so with its first cell: a ``resend`` with ``files``.  From then on every cell
of that pool carries ``sync``: the directory (``root``), the digest of what the kernel believes the
worker holds of it (``base``), and the files that differ (``put``: path, size, mtime, hash and where
its bytes are among the request's buffers; ``drop``).  An unchanged directory costs that one small
field: the kernel's ``filetree.Tree`` watches the directory (inotify), so finding that nothing
changed is one non-blocking read.  The worker writes them into its mirror of the directory, runs
the cell there, and sends back what the cell created, changed or deleted in it (``Done.files``).
A file that changed here while the cell ran is never overwritten: the worker's version is kept
beside it, and the cell says so.  The whole directory is held to ``$JUPYTER_GPU_SYNC_LIMIT``
(default 1 GiB) before anything is sent; ``.gitignore`` and ``.jupyter-gpu-ignore`` leave files out.
"""
from __future__ import annotations

import importlib.util
import os
import re
import sys
import types
from dataclasses import dataclass

import cloudpickle

from jupyter_gpu._wire import filestream, filetree, settings
from jupyter_gpu._wire.serialization import human_size
from jupyter_gpu.errors import FilesTooLarge
from jupyter_gpu.notebook.environ import interpreters

TREES = 8  # directories watched at once (a kernel that wanders closes the oldest watcher)


@dataclass
class Synced:
    """What a worker holds of one directory: its manifest (rel -> Entry) and the worker's digest of it."""

    root: str
    manifest: dict
    digest: str


@dataclass
class Moved:
    """One cell's sync: what went in (and the manifest the worker holds once it applied it)."""

    root: str
    manifest: dict
    digest: str
    files_in: int = 0
    bytes_in: int = 0
    # a large sync read as it is sent (filestream.Reader: its buffers follow the request's others),
    # and what the worker held before (a file spoiled as it was read stays as it was there)
    reader: object = None
    had: dict | None = None


class FileSync:
    """A kernel's synced directories: one watched Tree per directory, and the pools whose workers
    need the files sent."""

    def __init__(self):
        self.trees: dict[str, filetree.Tree] = {}
        # pool key -> the worker that said it does not see the kernel's directory (None: unknown)
        self.needed: dict[str, str | None] = {}
        self.always = False  # the backend says none of its workers does (its welcome's `files`)
        self._by_value: set[str] = set()  # modules registered with cloudpickle to go with their code
        self._by_reference: set[str] = set()  # modules looked at that a synced worker imports itself
        self._root: str | None = None

    def tree(self, root: str) -> filetree.Tree:
        t = self.trees.pop(root, None)
        if t is None:
            while len(self.trees) >= TREES:
                self.trees.pop(next(iter(self.trees))).close()
            _within_limit(root)  # a home directory of 50 GB fails now, not after hashing it all
            t = filetree.Tree(root)
        else:
            t.refresh()
        self.trees[root] = t  # the most recently used last
        return t

    def asked(self, key: str, worker: str | None) -> None:
        """``worker`` of pool ``key`` does not see the kernel's directory: send it from now on."""
        self.needed[key] = worker

    def syncs(self, key: str, held, again: bool = False) -> bool:
        """Whether a request to pool ``key`` (its worker as the kernel knows it: ``held``) carries the
        directory: the backend said so for all its workers, or the worker that asked is still the
        pool's, or this is the cell it asked about, sent ``again``.  Another worker (or one not
        known yet: after a release) is not sent it unasked: it may see the directory (docker: the
        mount of its own cold start), and asks if not."""
        if self.always:
            return True
        if key not in self.needed:
            return False
        if again or (held is not None and held.worker is not None and held.worker == self.needed[key]):
            return True
        if held is not None and held.worker is not None:
            del self.needed[key]  # its worker now is another one
        return False

    def request(self, key: str, held, packer, root: str, again: bool = False,
                stream: bool = True) -> tuple[dict, Moved | None]:
        """The ``sync`` field of a request to pool ``key`` (and its buffers, added to ``packer``),
        when that pool's worker needs the files; ({}, None) when it sees them itself.  A large one
        goes through the backend read as it is sent (``stream``; its buffers are ``Moved.reader``'s)."""
        if not self.syncs(key, held, again):
            return {}, None
        t = self.tree(root)
        cap = filetree.sync_limit()  # read per cell: `%env JUPYTER_GPU_SYNC_LIMIT=...` takes effect at once
        if cap and t.total > cap:
            raise FilesTooLarge(too_large(t, cap))
        # what the worker holds of this directory ("" digest: not known, so from nothing)
        have = held.files if held.files is not None and held.files.root == root and held.files.digest else None
        if have is not None and have.digest == t.digest:  # unchanged: one small field
            return {"sync": {"root": root, "base": have.digest}}, Moved(root, have.manifest, have.digest)
        put, drop = filetree.delta(have.manifest if have else {}, t.manifest)
        first, reader = len(packer.buffers), None
        if stream and sum(t.manifest[rel][0] for rel in put) >= filestream.STREAM_MIN:
            # read while it is sent (the header from the manifest): reading, sending and the
            # worker's writes overlap, in a bounded memory used again and again (filestream.py)
            entries, sizes = filestream.layout(put, t.manifest)
            reader = filestream.Reader(root, entries, sizes).start()
            entries = [[*e[:4], e[4] + first, e[5]] for e in entries]
        else:
            entries, buffers = filetree.pack(root, put, t.manifest)
            for e in entries:
                e[4] += first
            # on the wire, never lent as shared memory: the worker writes them to its disk anyway
            packer.buffers.extend(buffers)
        manifest = dict(t.manifest)
        for e in entries:  # what was read (a file that changed since the manifest: as it is now)
            manifest[e[0]] = (e[1], e[2], e[3])
        sync = {"root": root, "base": have.digest if have else "", "put": entries, "drop": drop,
                **({"check": True} if reader is not None else {})}
        return {"sync": sync}, Moved(root, manifest, t.digest, len(entries) + len(drop), sum(e[1] for e in entries),
                                     reader, have.manifest if have else {})

    def concluded(self, held, moved: Moved | None, files: dict | None, buffers: list, say) -> dict | None:
        """After the cell: bring back what it changed in the directory (``files``, from its ``done``),
        never over a file that changed here meanwhile; record what the worker holds now.  Returns
        the footer's ``files`` ({in, out, bytes}) when anything moved."""
        if moved is None:
            return None
        files = files or {}
        put, drop = files.get("put") or [], files.get("drop") or []
        manifest = moved.manifest
        bytes_out = 0
        for rel in moved.reader.spoiled if moved.reader is not None else ():
            # it changed as it was read: the worker did not write it (its hash did not match)
            manifest = dict(manifest) if manifest is moved.manifest else manifest
            old = moved.had.get(rel)
            if old is None:
                manifest.pop(rel, None)
            else:
                manifest[rel] = old
            say(f"jupyter-gpu: {rel} changed while it was being sent; the cell saw "
                f"{'its previous version' if old is not None else 'no such file'} on the worker (the next cell sends it)\n")
        if put or drop:
            t = self.tree(moved.root)
            manifest = dict(manifest)
            writes, removes, kept = [], [], []
            for e in put:
                rel, entry = e[0], (e[1], e[2], e[3])
                if _same(t.manifest.get(rel), moved.manifest.get(rel)):
                    writes.append(e)
                else:  # changed here while the cell ran: both kept
                    beside = _beside(moved.root, rel)
                    writes.append([beside, *e[1:]])
                    kept.append((rel, beside))
                manifest[rel] = entry
                bytes_out += e[1]
            for rel in drop:
                manifest.pop(rel, None)
                if _same(t.manifest.get(rel), moved.manifest.get(rel)):
                    removes.append(rel)
                else:
                    kept.append((rel, None))
            try:
                filetree.apply(moved.root, writes, buffers, removes)
            except (ValueError, OSError) as e:  # a path outside the directory (refused), a full disk
                say(f"jupyter-gpu: what the cell changed in the notebook's directory was not written here: {e}\n")
                writes, removes = [], []
                files = {**files, "digest": ""}  # its mirror is not what the kernel knows: all sent again
            for e in writes:
                t.adopt(e[0], (e[1], e[2], e[3]))
            for rel in removes:
                t.forget(rel)
            for rel, beside in kept:
                say(f"jupyter-gpu: {rel} changed here while the cell ran; "
                    + (f"the cell's version is kept beside it as {beside}\n" if beside
                       else "the cell deleted it there, and this version is kept\n"))
        if files.get("over"):
            say(f"jupyter-gpu: {files['over']}\n")
        if held is not None:
            held.files = Synced(moved.root, manifest, files.get("digest", moved.digest))
        n_out = len(put) + len(drop)
        if not (moved.files_in or n_out):
            return None
        return {"in": moved.files_in, "out": n_out, "bytes": moved.bytes_in + bytes_out}

    def close(self) -> None:
        for t in self.trees.values():
            t.close()
        self.trees.clear()


    # -- local code ------------------------------------------------------------------------------
    def by_value(self, key: str, held, values, root: str, again: bool = False) -> None:
        """Before the inputs of a cell for pool ``key`` are pickled: modules of the notebook's own
        code that its synced worker cannot import (outside the synced directory, and not the
        interpreter's) are registered so that a function, class or instance of one is pickled with
        its code (cloudpickle.register_pickle_by_value); one inside the directory goes by
        reference, as the worker imports its synced file."""
        if not self.syncs(key, held, again):
            return
        if root != self._root:
            self._root = root
            self._by_reference.clear()
        for value in values:
            name = value.__name__ if isinstance(value, types.ModuleType) else (
                getattr(value, "__module__", None) if isinstance(value, type) or callable(value) else type(value).__module__)
            if not isinstance(name, str) or name in self._by_value or name in self._by_reference:
                continue
            module = sys.modules.get(name)
            path = getattr(module, "__file__", None)
            if not path or _inside(path, root) or interpreters(path):
                self._by_reference.add(name)  # re-examined when the directory changes (below)
                continue
            cloudpickle.register_pickle_by_value(module)
            self._by_value.add(name)

    def explain_missing(self, error, say) -> None:
        """A cell that failed to import a module the kernel has: say where the kernel found it and
        what to do (the worker does not see it)."""
        if type(error).__name__ != "ModuleNotFoundError":
            return
        m = re.search(r"No module named '([^']+)'", str(error))
        if m is None:
            return
        name = m.group(1)
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        origin = getattr(spec, "origin", None)
        if not origin or origin in ("built-in", "frozen"):
            return
        root = os.getcwd()
        where = (f"outside the notebook's directory {root}, which is all of the kernel's files a synced worker "
                 "gets" if not _inside(origin, root) else "in a part of the notebook's directory left out (.gitignore, "
                 ".jupyter-gpu-ignore)")
        hint = ("install it into the worker's environment" if interpreters(origin) else
                "move it under the notebook's directory (or a folder of it on sys.path)")
        say(f"jupyter-gpu: the kernel imports '{name}' from {origin}, which this worker cannot see ({where}); "
            f"{hint}. A function, class or instance of it sent from the kernel goes with its code.\n")


def _inside(path: str, root: str) -> bool:
    return os.path.realpath(path).startswith(os.path.join(os.path.realpath(root), ""))


def _same(a, b) -> bool:
    """Two entries of one path hold the same content (both absent: the same too)."""
    if a is None or b is None:
        return a is b
    return a[0] == b[0] and a[2] == b[2]


def _beside(root: str, rel: str) -> str:
    """Where the worker's version of a file that changed here goes: data.csv -> data.remote.csv
    (data.remote-2.csv, ... when that is taken)."""
    head, tail = os.path.split(rel)
    stem, dot, ext = tail.partition(".") if not tail.startswith(".") else (tail, "", "")
    for n in range(1, 1000):
        name = f"{stem}.remote{'' if n == 1 else f'-{n}'}{dot}{ext}"
        candidate = f"{head}/{name}" if head else name
        if not os.path.lexists(os.path.join(root, candidate)):
            return candidate
    raise FileExistsError(f"no free name beside {rel}")


def _within_limit(root: str) -> None:
    """Before a directory is first scanned (and hashed): its files' sizes, by a walk that stops as
    soon as they pass the limit (FilesTooLarge, naming the biggest seen)."""
    cap = filetree.sync_limit()
    if not cap:
        return
    ignore, total, seen = filetree.Ignore(root), 0, []
    for top, dirs, files in os.walk(root):
        rel_top = os.path.relpath(top, root).replace(os.sep, "/")
        rel_top = "" if rel_top == "." else rel_top + "/"
        dirs[:] = [d for d in dirs if not ignore.ignored(rel_top + d, True)]
        for name in files:
            rel = rel_top + name
            if ignore.ignored(rel, False):
                continue
            try:
                size = os.stat(os.path.join(top, name)).st_size
            except OSError:
                continue
            total += size
            seen.append((rel, size))
            if total > cap:
                seen.sort(key=lambda x: -x[1])
                raise FilesTooLarge(_over(root, f"more than {human_size(total)}", seen[:5], cap))


def too_large(t: filetree.Tree, cap: int) -> str:
    """The error of a directory over the sync limit: its size, the biggest files, what to do."""
    return _over(t.root, human_size(t.total), t.biggest(5), cap)


def _over(root: str, size: str, biggest: list, cap: int) -> str:
    biggest = ", ".join(f"{rel} ({human_size(n)})" for rel, n in biggest)
    return (f"the notebook's directory {root} holds {size} to sync to the worker, over "
            f"${settings.SYNC_LIMIT.name}={human_size(cap)}; nothing was sent. Biggest: {biggest}. "
            "Leave files out with a .jupyter-gpu-ignore (gitignore syntax), or raise the limit "
            f"(%env {settings.SYNC_LIMIT.name}=4GiB; 0: none).")
