"""A sync's files read while they are sent: the kernel's side of a large sync (issue 21).

``filetree.pack`` reads every file before the request's header can be made: for a first sync of
540 MB that is ~0.5 s before the first byte leaves, and the worker writes nothing meanwhile.  Here the
header is made from the manifest instead (``layout``: the buffers ``pack`` would make, each entry the
manifest's), and a thread reads the files into those buffers in order (``Reader``) while the sender
sends each buffer as soon as it is full (``Reader.take``, ``framing.streamed``), and the worker writes
each file as soon as its bytes arrive (``framing.Assembly``): reading, sending and writing overlap, in
a bounded memory used again and again on both sides (``WINDOW``).

The manifest may be behind the disk: a file changed since the tree's last refresh, or one hashed
within the same clock tick as its last write (racy, filetree.RACY_NS), may not hold the bytes its
entry names.  Such a file is *spoiled*: its stat disagrees (or, racy, its bytes hash otherwise), its
bytes are sent as zeros (or as read), and the worker, asked to check each file's hash (``sync["check"]``), does
not write it - its mirror keeps what it had.  The kernel knows which (``Reader.spoiled``), records
the worker's old version (or none), says so, and sends the file with the next cell.
"""
from __future__ import annotations

import os
import stat
import threading
import time

import xxhash

from jupyter_gpu._wire import filetree, framing

STREAM_MIN = 32 << 20  # a delta of fewer bytes is packed first (filetree.pack): nothing to overlap
WINDOW = 16  # buffers (of filetree.BLOB: 64 MiB) a Reader holds at once


def layout(rels: list, manifest: dict) -> tuple[list, list]:
    """(entries, buffer sizes) of ``rels`` laid out as ``filetree.pack`` does (small files together in
    buffers of at most filetree.BLOB, a bigger one in BLOB-sized buffers of its own), each entry the
    manifest's [rel, size, mtime_ns, hash, buffer, offset] - but the small files come first, so that
    the worker creates them (a file's creation costs more than its bytes) while the big ones' bytes
    are still on their way, and a big file closes the buffer of small ones before it: the buffers
    fill one after the other (each is sent once full, in order)."""
    entries, sizes, used, slot = [], [], 0, -1
    for rel in sorted(rels, key=lambda r: manifest[r][0] >= filetree.BLOB):  # (a stable sort)
        size, mtime_ns, digest = manifest[rel]
        if size >= filetree.BLOB:
            if slot >= 0:
                sizes[slot], slot = used, -1
            entries.append([rel, size, mtime_ns, digest, len(sizes), 0])
            sizes += [min(filetree.BLOB, size - off) for off in range(0, size, filetree.BLOB)]
            continue
        if slot < 0 or used + size > filetree.BLOB:
            if slot >= 0:
                sizes[slot] = used
            slot, used = len(sizes), 0
            sizes.append(0)
        entries.append([rel, size, mtime_ns, digest, slot, used])
        used += size
    if slot >= 0:
        sizes[slot] = used
    return entries, sizes


class Reader:
    """Reads ``entries`` (``layout``'s) under ``root`` into buffers of ``sizes``, in order, on a thread of
    its own (``start``).  ``take(i)`` waits until buffer i is full and gives it; ``release(i)`` gives it
    up once sent.  At most ``window`` buffers are held at once (None: all of them): a 540 MB sync
    holds 64 MiB, and the same memory is used again and again - on a VM, memory touched for the
    first time in a while costs as much to fault in as the files cost to write (~1 s per 500 MB)."""

    def __init__(self, root: str, entries: list, sizes: list, window: int | None = WINDOW):
        self.root, self.entries, self.sizes = root, entries, sizes
        self.buffers: list = [None] * len(sizes)
        self.window = window or len(sizes) + 1
        self.spoiled: list[str] = []  # rels whose bytes were not their entry's (the worker writes none)
        self.complete = 0  # buffers [0, complete) are full
        self.held = 0  # buffers made and not released
        self.error: BaseException | None = None  # the reader's own failure: the files from there spoiled
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="jupyter-gpu-sync-reader", daemon=True)
        self._closed = False
        self._next = 0  # the first buffer not reached yet
        self._last: tuple | None = None  # the file being read's last piece: (buffer, whether it ends it)

    def start(self) -> "Reader":
        """Begin reading (the first ``take`` does: a request packed and never sent reads nothing)."""
        if self._thread.ident is None:
            self._thread.start()
        return self

    def close(self) -> None:
        """The send ended (or failed half way): the reader stops where it is."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def take(self, index: int):
        """Buffer ``index`` once it is full (it always will be: a file that cannot be read is
        spoiled, the message stays whole)."""
        self.start()
        if self.complete <= index:
            with self._cond:
                while self.complete <= index:
                    self._cond.wait()
        return self.buffers[index]

    def release(self, index: int) -> None:
        """Buffer ``index`` was sent: its memory holds the next one."""
        with self._cond:
            if self.buffers[index] is not None:
                self.buffers[index] = None
                self.held -= 1
                self._cond.notify_all()

    def _buffer(self, j: int) -> memoryview:
        """Buffer j (made now, once fewer than ``window`` are held) as a writable byte view."""
        if self.buffers[j] is None:
            with self._cond:
                while self.held >= self.window and not self._closed:
                    self._cond.wait()
                if self._closed:
                    raise _Closed()
                self.held += 1
            self.buffers[j] = framing._alloc(self.sizes[j])
        v = memoryview(self.buffers[j])
        return v if v.format == "B" else v.cast("B")

    def _advance(self, complete: int) -> None:
        while complete < len(self.sizes) and self.sizes[complete] == 0 and complete < self._next:
            self._buffer(complete)  # (an empty buffer: full as soon as it is made)
            complete += 1
        with self._cond:
            self.complete = complete
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            self._read_all()
            self._next = len(self.sizes)
            for j in range(self.complete, len(self.sizes)):
                self._buffer(j)  # (unreached: empty)
            self._advance(len(self.sizes))
        except _Closed:
            pass

    def _read_all(self) -> None:
        realroot = os.path.realpath(self.root)
        entries, k = self.entries, 0
        try:
            for k, (rel, size, mtime_ns, digest, index, offset) in enumerate(entries):
                self._next = max(self._next, index + 1)
                self._buffer(index)  # (an empty file's too: its buffer may hold only empty files)
                self._last = None
                if not self._read(realroot, rel, size, mtime_ns, digest, index, offset):
                    self.spoiled.append(rel)
                if self._last is not None:  # its last buffer goes once what it holds is known
                    self._done(*self._last)
        except _Closed:
            raise
        except BaseException as e:  # (a bug, or memory): the rest is spoiled, the message still whole
            self.error = e
            for rel, size, _, _, index, offset in entries[k:]:
                self._last = None
                self._zero(index, offset, size)
                if rel not in self.spoiled[-1:]:
                    self.spoiled.append(rel)
                if self._last is not None:
                    self._done(*self._last)

    def _pieces(self, index: int, offset: int, size: int):
        """(buffer, its view of the file's bytes there) for a file's ``size`` bytes from (``index``,
        ``offset``) on; each buffer made as it is reached."""
        left = size
        while left > 0:
            v = self._buffer(index)[offset:offset + left]
            yield index, v
            left -= len(v)
            index, offset = index + 1, 0

    def _done(self, j: int, view_end: bool) -> None:
        if view_end:  # its last byte is there: full
            self._next = max(self._next, j + 1)
            self._advance(j + 1)

    def _piece_done(self, j: int, view_end: bool, last: bool) -> None:
        """A file's piece in buffer j is there; the file's last one waits for its verdict (_read_all):
        ``spoiled`` is complete before the last buffer is taken."""
        if last:
            self._last = (j, view_end)
        else:
            self._done(j, view_end)

    def _zero(self, index: int, offset: int, size: int) -> None:
        at, left = offset, size
        for j, v in self._pieces(index, offset, size):
            v[:] = bytes(len(v))  # never uninitialised memory on the wire
            left -= len(v)
            self._piece_done(j, at + len(v) == self.sizes[j], left == 0)
            at = 0

    def _read(self, realroot: str, rel: str, size: int, mtime_ns: int, digest: str, index: int, offset: int) -> bool:
        """Read one file into its place; False when it is not the entry's (gone, another size or mtime,
        a short read, or racy and its bytes hash otherwise): its bytes left zero, or as read."""
        try:
            f = filetree._open_inside(self.root, realroot, rel)
        except (OSError, ValueError):
            self._zero(index, offset, size)
            return False
        with f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_size != size or st.st_mtime_ns != mtime_ns:
                f.close()
                self._zero(index, offset, size)
                return False
            racy = time.time_ns() - mtime_ns < filetree.RACY_NS  # the manifest's hash may be of other bytes
            h = xxhash.xxh3_128() if racy else None
            ok, at, left = True, offset, size
            for j, v in self._pieces(index, offset, size):
                n = filetree._fill(f, v) if ok else 0
                if n != len(v):
                    v[n:] = bytes(len(v) - n)
                    ok = False
                if h is not None:
                    h.update(v)
                left -= len(v)
                self._piece_done(j, at + len(v) == self.sizes[j], left == 0)
                at = 0
            ok = ok and os.fstat(f.fileno()).st_mtime_ns == mtime_ns  # not written to while it was read
        return ok and (h is None or h.hexdigest() == digest)


class _Closed(Exception):
    """The send is over: the reader stops."""
