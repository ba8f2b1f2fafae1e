"""A directory as a manifest of content hashes, kept current cheaply, and its files' bytes for the wire.

Issue 21, "another filesystem": when the worker cannot see the kernel's directory, the two sides keep
the same tree by content.  Each side holds a ``Tree`` (rel path -> (size, mtime_ns, xxh3_128) of every
file its ``Ignore`` rules keep, gitignore.py); ``delta`` says what to send, ``pack`` reads those files
into a few large buffers and ``apply`` (fileapply.py) writes them on the other side, atomically per
file and never outside its root.

Imported by the kernel and by the worker (its image has no pathspec or watchdog): stdlib + xxhash only.
Linux's inotify (through ctypes) makes ``Tree.refresh()`` of an unchanged tree one failed ``read``;
elsewhere, or when inotify is unavailable, refresh re-stats every file and hashes only what changed.
"""
from __future__ import annotations

import errno
import heapq
import os
import stat
import time

import xxhash

from jupyter_gpu._wire.fileapply import _inside, apply
from jupyter_gpu._wire.gitignore import ALWAYS_IGNORED, IGNORE_FILES, Ignore
from jupyter_gpu._wire.inotify import Watches

__all__ = ["ALWAYS_IGNORED", "BLOB", "Entry", "Ignore", "Tree", "apply", "delta", "pack", "sync_limit"]

Entry = tuple  # (size: int, mtime_ns: int, hash: str): hash = xxh3_128 hexdigest of the file's bytes
BLOB = 4 << 20  # small files travel concatenated in buffers of at most this size; a bigger file in its own
RACY_NS = 2_000_000_000  # a file hashed this close to its mtime may change again within the same clock tick
_CHUNK = 1 << 20


def sync_limit(environ=None) -> int:
    """$JUPYTER_GPU_SYNC_LIMIT in bytes ('1GiB' default, '500MB', '0' = no limit), read as every
    size setting is (serialization.parse_size: powers of 1024 either way)."""
    from jupyter_gpu._wire import settings
    from jupyter_gpu._wire.serialization import parse_size

    return parse_size(settings.SYNC_LIMIT.get(environ), settings.SYNC_LIMIT.name)


def _open(path: str, follow: bool = False):
    # O_NONBLOCK: a file swapped for a FIFO since its stat must not hang us; O_NOFOLLOW: nor one swapped
    # for a symlink that leads out of root (a symlinked file is opened at its resolved path: follow).
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= 0 if follow else getattr(os, "O_NOFOLLOW", 0)
    return open(os.open(path, flags), "rb", buffering=0)


def _fill(f, view) -> int:
    """Read into view until it is full or the file ends; the bytes read."""
    got, n = 0, len(view)
    while got < n and (k := f.readinto(view[got:])):
        got += k
    return got


def _hash_file(path: str, follow: bool = False):
    """(Entry, racy) of the regular file at path, from one open, or None if it is gone or no file.  The stat
    is taken before reading (as git does): a write during the read leaves an entry its next stat disagrees
    with; a read that saw another size than that stat raced a writer and counts as racy."""
    try:
        with _open(path, follow) as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                return None
            if st.st_size < _CHUNK:
                data = f.read()
                n, digest = len(data), xxhash.xxh3_128_hexdigest(data)
            else:  # one 1 MiB buffer, read into again and again: no allocation per chunk
                h, view, n = xxhash.xxh3_128(), memoryview(bytearray(_CHUNK)), 0
                while k := _fill(f, view):
                    h.update(view[:k])
                    n += k
                digest = h.hexdigest()
    except OSError:
        return None
    return (n, st.st_mtime_ns, digest), n != st.st_size or time.time_ns() - st.st_mtime_ns < RACY_NS


def _mix(rel: str, e: Entry) -> int:
    return xxhash.xxh3_128_intdigest(f"{rel}\0{e[0]}\0{e[2]}".encode("utf-8", "surrogateescape"))


def _below(rel: str, dirs: set) -> bool:
    while "/" in rel:
        rel = rel.rpartition("/")[0]
        if rel in dirs:
            return True
    return False


class Tree:
    """A directory's manifest, kept current cheaply: rel path -> Entry of every regular file not ignored.
    A symlink to a regular file inside root counts as that file; other symlinks (to directories, outside
    root, dangling) are skipped: a walk never leaves root."""

    def __init__(self, root: str, watch: bool = True, known: dict | None = None):
        """``known``: rel -> Entry of files just written with that content and mtime (apply() into a
        new directory): the first scan takes each one whose stat agrees as it is, without reading it
        - as ``adopt`` would, without a second pass (a worker's first sync of 10,000 files)."""
        self._known = known
        self.root = os.path.abspath(root)
        self._real = os.path.realpath(self.root)
        self.manifest: dict[str, Entry] = {}
        self.total = self._digest = 0
        self._racy: set[str] = set()  # hashed within RACY_NS of their mtime: a change may keep size and mtime
        self._links: set[str] = set()  # symlinked files: a change of their target raises no event for them
        self._before: dict | None = None  # since mark(): rel -> its entry before its first change
        self._watches = Watches.open(self.root) if watch else None
        self.ignore = Ignore(self.root)
        self._scan([""], full=True)
        self._known = None

    _watches = None
    _known = None
    watching = property(lambda self: self._watches is not None, doc="True while inotify reports the tree's changes")
    digest = property(lambda self: f"{self._digest:032x}",
                      doc="XOR of xxh3_128(rel, size, hash) over the manifest: equal content, equal digest, "
                          "whatever the mtimes and the order files came in; a file's change costs O(1)")

    def refresh(self) -> bool:
        """Bring the manifest up to date; True if it changed (an entry's mtime alone included)."""
        if self._watches is None:
            if self.ignore.stale():
                self.ignore = Ignore(self.root)
            return self._scan([""], full=True)
        # The hot path: an unchanged tree costs one failed non-blocking read (EAGAIN), whatever its size:
        # 1.8 us median (p99 2-7 us), 10,000 files in 101 directories, 2-core dev VM (bench_filetree.py).
        events = self._watches.read()
        if events is None:
            return bool(self._links) and self._check_links()
        dirty, full = events
        full |= any(rel.rpartition("/")[2] in IGNORE_FILES for rel in dirty)  # new rules: anything below may go
        if full:
            self.ignore = Ignore(self.root)
            return self._scan([""], full=True)
        return self._reconcile(dirty) | (bool(self._links) and self._check_links())

    def adopt(self, rel: str, entry: Entry) -> None:
        """Record a file just written with this content and mtime (apply()) without hashing it, if its
        stat agrees; else hash it."""
        if self.ignore.ignored(rel, False):
            return
        try:
            st = os.lstat(os.path.join(self.root, rel))
        except OSError:
            return self.forget(rel)
        if not stat.S_ISREG(st.st_mode):
            self._link(rel) if stat.S_ISLNK(st.st_mode) else self.forget(rel)
        elif (st.st_size, st.st_mtime_ns) == tuple(entry[:2]):
            self._set(rel, tuple(entry), time.time_ns() - entry[1] < RACY_NS)
        else:
            self._file(rel, st)

    def mark(self) -> None:
        """From now on, keep each path's entry as it was before its first change (``since_mark``): what
        a cell changed is found in O(changes), not by comparing two copies of the manifest."""
        self._before = {}

    def since_mark(self) -> tuple[list, list]:
        """(rels new or with other content, rels gone) since ``mark()``, each sorted; the mark ends."""
        before, self._before = self._before or {}, None
        put, drop = [], []
        for rel, old in before.items():
            new = self.manifest.get(rel)
            if new is None:
                if old is not None:
                    drop.append(rel)
            elif old is None or old[0] != new[0] or old[2] != new[2]:
                put.append(rel)
        return sorted(put), sorted(drop)

    def forget(self, rel: str) -> None:
        """Drop a file just deleted."""
        old = self.manifest.pop(rel, None)
        if old is not None and self._before is not None and rel not in self._before:
            self._before[rel] = old
        if old is not None:
            self._digest ^= _mix(rel, old)
            self.total -= old[0]
        self._racy.discard(rel)
        self._links.discard(rel)

    def biggest(self, n: int = 5) -> list:
        """[(rel, size)] of the n largest files, largest first."""
        return heapq.nlargest(n, ((rel, e[0]) for rel, e in self.manifest.items()), key=lambda t: t[1])

    def close(self) -> None:
        if self._watches is not None:
            self._watches.close()
            self._watches = None

    __del__ = close  # an inotify instance is a scarce thing (128 a user): never leak one
    __enter__ = lambda self: self  # noqa: E731
    __exit__ = lambda self, *exc: self.close()  # noqa: E731

    # ---------------------------------------------------------------------------------- internals
    def _set(self, rel: str, entry: Entry, racy: bool) -> bool:
        (self._racy.add if racy else self._racy.discard)(rel)
        old = self.manifest.get(rel)
        if old == entry:
            return False
        if self._before is not None and rel not in self._before:
            self._before[rel] = old
        if old is not None:
            self._digest ^= _mix(rel, old)
            self.total -= old[0]
        self.manifest[rel] = entry
        self._digest ^= _mix(rel, entry)
        self.total += entry[0]
        return True

    def _file(self, rel: str, st, path: str | None = None) -> bool:
        """A file's entry from its stat: hashed only when (size, mtime_ns) moved, or it is racy."""
        old = self.manifest.get(rel)
        if old is not None and old[0] == st.st_size and old[1] == st.st_mtime_ns and rel not in self._racy:
            return False
        if self._known and path is None and (k := self._known.get(rel)) is not None \
                and k[0] == st.st_size and k[1] == st.st_mtime_ns:
            return self._set(rel, tuple(k), time.time_ns() - k[1] < RACY_NS)
        got = _hash_file(path or os.path.join(self.root, rel), follow=path is not None)
        return self._set(rel, *got) if got else self._gone(rel, False)

    def _link(self, rel: str) -> bool:
        target = os.path.realpath(os.path.join(self.root, rel))
        try:
            st = os.stat(target)
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode) or not _inside(target, self._real):
            return self._gone(rel, False)
        self._links.add(rel)
        return self._file(rel, st, target)

    def _check_links(self) -> bool:
        return any([self._reconcile({rel: False}) for rel in list(self._links)])

    def _gone(self, rel: str, tree: bool) -> bool:
        """Drop rel and, when it is or was a directory (tree), everything below it.  Only then is the
        manifest walked: a file's name gone (apply()'s temp files, one each) costs O(1)."""
        had = rel in self.manifest
        self.forget(rel)
        below = []
        if tree or rel in self._dirs():
            prefix = rel + "/" if rel else ""
            below = [k for k in self.manifest if k.startswith(prefix)]
            for k in below:
                self.forget(k)
            if self._watches is not None:
                self._watches.remove(rel)
        return had or bool(below)

    def _dirs(self) -> dict:
        return self._watches.dirs if self._watches is not None else {}

    def _watch(self, d: str) -> None:
        """Watch d before listing it, so no change falls between the two.  Watches run out (ENOSPC: the
        user's max_user_watches): inotify is given up, and refresh() stats everything from then on."""
        if self._watches is not None and not self._watches.add(d):
            self.close()

    def _reconcile(self, dirty) -> bool:
        """Make the manifest agree with the disk for each path that had events.  Paths that went come
        first: a directory moved within root is one name gone and one new, and the gone one's watches
        must be removed before the new name adds its own."""
        changed, present, new = False, [], []
        for rel in sorted(dirty):
            try:
                present.append((rel, os.lstat(os.path.join(self.root, rel))))
            except OSError:
                changed |= self._gone(rel, dirty[rel])
        for rel, st in present:
            if self._watches is not None and rel.rpartition("/")[0] not in self._watches.dirs:
                continue  # below a directory that went, or that is ignored, since
            is_dir = stat.S_ISDIR(st.st_mode)
            if self.ignore.ignored(rel, is_dir) or not (is_dir or stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                changed |= self._gone(rel, is_dir)
            elif is_dir:
                if rel not in self._dirs():  # new: files may have been made in it before its watch
                    changed |= self._gone(rel, False) if rel in self.manifest else False
                    new.append(rel)
            elif stat.S_ISREG(st.st_mode):
                changed |= (self._gone(rel, True) if rel in self._dirs() else False) | self._file(rel, st)
            else:
                changed |= self._link(rel)
        return (self._scan(new, full=False) if new else False) | changed

    def _scan(self, tops: list, full: bool) -> bool:
        """Walk the directories tops: stat every file, hash those whose (size, mtime_ns) moved; drop the
        entries below them that are no longer there (one pass over the manifest for all of them).  A first
        scan of 10,000 files / 565 MB (9,900 of 2-6 KiB, 100 of 5 MiB) takes 0.32-0.36 s on the 2-core dev
        VM, page cache warm; a stat-only rescan of it 58 ms (bench_filetree.py)."""
        changed, seen, stack, live = False, set(), list(tops), set()
        while stack:
            d = stack.pop()
            self._watch(d)
            live.add(d)
            try:
                it = os.scandir(os.path.join(self.root, d))
            except OSError:
                continue
            with it:
                for e in it:
                    rel = f"{d}/{e.name}" if d else e.name
                    try:
                        if e.is_dir(follow_symlinks=False):
                            if not self.ignore.match(d, rel, True):
                                stack.append(rel)
                        elif self.ignore.match(d, rel, False):
                            continue
                        elif e.is_file(follow_symlinks=False):
                            seen.add(rel)
                            changed |= self._file(rel, e.stat(follow_symlinks=False))
                        elif e.is_symlink():
                            seen.add(rel)
                            changed |= self._link(rel)
                    except OSError:
                        continue
        tops = set(tops)
        for k in [k for k in self.manifest if k not in seen and (full or _below(k, tops))]:
            self.forget(k)
            changed = True
        if full and self._watches is not None:  # directories ignored by new rules lose their watch
            self._watches.remove("", keep=live)
        return changed


def delta(old: dict, new: dict) -> tuple[list, list]:
    """(rels to put: new, or another size or hash; rels to drop: gone), each sorted.  A new mtime alone
    is no reason to send a file."""
    put = sorted(rel for rel, e in new.items() if (o := old.get(rel)) is None or o[0] != e[0] or o[2] != e[2])
    return put, sorted(rel for rel in old if rel not in new)


def pack(root: str, rels: list, manifest: dict) -> tuple[list, list]:
    """Files' bytes for the wire: (entries, buffers), entries = [[rel, size, mtime_ns, hash, buffer_index,
    offset], ...].  A file's bytes are the ``size`` bytes from (buffer_index, offset) on, through
    consecutive buffers.  Files under BLOB share buffers of at most BLOB bytes (one bytearray each, sized
    from the manifest, filled with readinto, handed out as a memoryview of its used part); a file of BLOB
    or more has buffers of its own, BLOB bytes each but the last, offset 0 (bytes from read(): not zeroed
    first).  Each file is read as it is now and its entry says what was read (stat before reading; hashed
    unless size and mtime are the manifest's and not racy).  A file gone or unreadable is left out: the
    next delta() drops it.  Everything read is held in memory: pack a large delta in parts."""
    entries, buffers, blob, used, slot = [], [], bytearray(), 0, -1
    realroot = os.path.realpath(root)
    expect = sum(e[0] for r in rels if (e := manifest.get(r)) is not None and e[0] < BLOB)  # small bytes to come
    for rel in rels:
        try:
            f = _open_inside(root, realroot, rel)
        except (OSError, ValueError):
            continue
        with f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                continue
            size, views, n = st.st_size, [], 0
            if size >= BLOB:
                where = (len(buffers), 0)
                while n < size and (chunk := f.read(min(BLOB, size - n))):
                    views.append(chunk)
                    n += len(chunk)
                buffers += views
            if not views:  # small (or emptied since its stat)
                old = manifest.get(rel)
                expect -= old[0] if old is not None and old[0] < BLOB else 0
                if slot < 0 or used + size > len(blob):  # a new blob (the first: for an empty first file too)
                    if slot >= 0:
                        buffers[slot] = memoryview(blob)[:used]
                    blob, used, slot = bytearray(min(BLOB, max(size, expect + size))), 0, len(buffers)
                    buffers.append(b"")
                n = _fill(f, memoryview(blob)[used:used + size])
                views, where = [memoryview(blob)[used:used + n]], (slot, used)
                used += n
        old = manifest.get(rel)
        if old is not None and old[0] == n == size and old[1] == st.st_mtime_ns \
                and time.time_ns() - st.st_mtime_ns >= RACY_NS:
            digest = old[2]  # the very bytes the manifest hashed
        else:
            h = xxhash.xxh3_128()
            for v in views:
                h.update(v)
            digest = h.hexdigest()
        entries.append([rel, n, st.st_mtime_ns, digest, *where])
    if slot >= 0:
        buffers[slot] = memoryview(blob)[:used]
    return entries, buffers


def _open_inside(root: str, realroot: str, rel: str):
    try:
        return _open(os.path.join(root, rel))
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
    target = os.path.realpath(os.path.join(root, rel))  # a symlink: read it only where it lies inside root
    if not _inside(target, realroot):
        raise ValueError(f"{rel!r} leads outside {root}")
    return _open(target, follow=True)
