"""How a message becomes frames, and frames a message: the framing the kernel side, the backend and
the worker agent share (what a header may hold is ``messages.py``).

Every message is one *binary* websocket frame::

    b"JG" | version:u8 | flags:u8 | header_len:u32le | header (JSON object) | inline payload

The header is a small JSON object with at least ``"type"``, validated as it is decoded against its
type's definition in ``messages.py`` (``schema.py``).  Payload buffers (pickles and the
out-of-band buffers of pickle protocol 5) never go through JSON: their sizes are listed in
``header["buffers"]``.  Small payloads (total <= INLINE_MAX) ride in the first frame right after the
header; larger ones follow as ``header["nframes"]`` further binary frames, each buffer cut into
frames of at most CHUNK bytes (a buffer never shares a frame with another).  A relay can therefore
forward a message frame by frame without assembling it, and a receiver can assemble each buffer
into writable memory of the right size with one copy.

Binary frames skip the UTF-8 validation text frames would get, and one frame per small message
keeps the warm path at one write per hop.
"""
from __future__ import annotations

import struct
import threading
from dataclasses import dataclass, field
from typing import Callable, Sequence

from jupyter_gpu._wire import schema

PROTOCOL_VERSION = 1
MAGIC = b"JG"
_PREFIX = struct.Struct("<2sBBI")
PREFIX_SIZE = _PREFIX.size
CHUNK = 4 * 1024 * 1024  # 1-4 MiB frames are 5-20x faster than one huge frame (ENVIRONMENT.md)
INLINE_MAX = 256 * 1024
MAX_HEADER = 16 * 1024 * 1024
MAX_PAYLOAD = 64 * 1024**3  # a per-message ceiling; the backend applies its own, lower, limit


class ProtocolError(ValueError):
    """A frame or message that does not follow this protocol.  The message says what is wrong."""


class HeaderTooLarge(ProtocolError):
    """Raised by ``encode``: a header over MAX_HEADER, which the peer would refuse and close the
    connection on.  Nothing was sent; the connection still works."""


class InvalidMessage(ProtocolError):
    """A well-framed message whose header does not match its type's definition (``messages.py``):
    ``header`` is what it holds, unvalidated, so a receiver can skip its frames (``follow_frames``)
    and answer it, keeping the connection."""

    def __init__(self, message: str, header: dict):
        super().__init__(message)
        self.header = header


@dataclass
class Message:
    header: dict
    buffers: list = field(default_factory=list)  # bytes-like, writable when decoded by assemble()

    @property
    def type(self) -> str:
        return self.header["type"]


def _nbytes(buf) -> int:
    return buf.nbytes if isinstance(buf, memoryview) else len(buf)


def encode(header: dict, buffers: Sequence = ()) -> list:
    """Return the frames (bytes or memoryviews) that carry ``header`` and ``buffers``.

    ``header`` is not modified.  Buffers are sent as they are: no copy is made of a large buffer.
    """
    views = [b if isinstance(b, memoryview) else memoryview(b) for b in buffers]
    views = [v if v.ndim == 1 and v.format == "B" and v.contiguous else v.cast("B") for v in views]
    sizes = [v.nbytes for v in views]
    total = sum(sizes)
    head = dict(header)
    if sizes:
        head["buffers"] = sizes
    inline = total <= INLINE_MAX
    frames_after: list = []
    if not inline:
        for v in views:
            n = v.nbytes
            if n == 0:
                frames_after.append(b"")
            for off in range(0, n, CHUNK):
                frames_after.append(v[off : off + CHUNK])
        head["nframes"] = len(frames_after)
    hj = schema.encode_header(head)
    if len(hj) > MAX_HEADER:
        raise HeaderTooLarge(f"a {head.get('type')!r} message's header is {len(hj)} bytes, more than the "
                             f"{MAX_HEADER} a header may be")
    first = [_PREFIX.pack(MAGIC, PROTOCOL_VERSION, 0, len(hj)), hj]
    if inline:
        first.extend(views)
    return [b"".join(first)] + frames_after


def streamed(header: dict, sizes: list, take: Callable[[int], object], release: Callable[[int], None]):
    """The frames of a message whose buffers are still being made (a sync read as it is sent,
    filestream.py): its first frame at once (the header, with every buffer's size: never inline),
    then each buffer's frames once ``take(i)`` gives it, and ``release(i)`` once they were sent."""
    head = dict(header)
    head["buffers"] = list(sizes)
    head["nframes"] = sum(max(1, -(-n // CHUNK)) for n in sizes)
    hj = schema.encode_header(head)
    if len(hj) > MAX_HEADER:
        raise HeaderTooLarge(f"a {head.get('type')!r} message's header is {len(hj)} bytes, more than the "
                             f"{MAX_HEADER} a header may be")
    yield _PREFIX.pack(MAGIC, PROTOCOL_VERSION, 0, len(hj)) + hj
    for i, n in enumerate(sizes):
        v = memoryview(take(i))
        v = v if v.ndim == 1 and v.format == "B" and v.contiguous else v.cast("B")
        if v.nbytes != n:
            raise ValueError(f"buffer {i} is {v.nbytes} bytes, its header says {n}")
        if n == 0:
            yield b""
        for off in range(0, n, CHUNK):
            yield v[off : off + CHUNK]
        del v
        release(i)


def parse_first(frame) -> tuple[dict, memoryview]:
    """Split a message's first frame into its header and its inline payload.

    Raises ProtocolError naming what is wrong with a malformed frame.
    """
    if isinstance(frame, str):
        raise ProtocolError("expected a binary frame, got a text frame")
    mv = memoryview(frame)
    if mv.nbytes < PREFIX_SIZE:
        raise ProtocolError(f"frame of {mv.nbytes} bytes is shorter than the {PREFIX_SIZE}-byte prefix")
    magic, version, _flags, hlen = _PREFIX.unpack_from(mv)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {bytes(magic)!r}: not a jupyter-gpu frame")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version} is not supported (this side speaks {PROTOCOL_VERSION})")
    if hlen > MAX_HEADER or PREFIX_SIZE + hlen > mv.nbytes:
        raise ProtocolError(f"header length {hlen} runs past the end of a {mv.nbytes}-byte frame")
    invalid = None
    try:
        header = schema.decode(mv[PREFIX_SIZE : PREFIX_SIZE + hlen].tobytes())
    except schema.SchemaError as e:
        if e.header is None:
            raise ProtocolError(str(e)) from None
        header, invalid = e.header, str(e)  # its framing is checked first: can it be skipped?
    sizes = header.get("buffers", [])
    if not isinstance(sizes, list) or not all(isinstance(n, int) and n >= 0 for n in sizes):
        raise ProtocolError("'buffers' must be a list of non-negative integers")
    total = sum(sizes)
    if total > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {total} bytes exceeds the protocol limit of {MAX_PAYLOAD}")
    inline = mv[PREFIX_SIZE + hlen :]
    nframes = header.get("nframes", 0)
    if not isinstance(nframes, int) or nframes < 0:
        raise ProtocolError("'nframes' must be a non-negative integer")
    if nframes == 0:
        if inline.nbytes != total:
            raise ProtocolError(f"inline payload is {inline.nbytes} bytes, header lists {total}")
    else:
        if inline.nbytes:
            raise ProtocolError("a message with follow-on frames must not carry an inline payload")
        expected = sum(max(1, -(-n // CHUNK)) for n in sizes)
        if nframes != expected:
            raise ProtocolError(f"'nframes' is {nframes}, buffers of {sizes} need {expected}")
    if invalid is not None:
        raise InvalidMessage(invalid, header)
    return header, inline


def payload_size(header: dict) -> int:
    return sum(header.get("buffers", ()))


def assemble(header: dict, inline: memoryview, recv: Callable[[], object], into: bool = False) -> list:
    """Read the rest of a message with ``recv()`` and return its buffers as writable memory.

    Inline buffers are copied out of the frame (frames are immutable bytes; numpy arrays rebuilt
    from them must be writable).  Large buffers are allocated once and filled frame by frame
    (``into``: see ``Assembly``).
    """
    sizes = header.get("buffers", [])
    if not sizes:
        return []
    if header.get("nframes", 0) == 0:
        out, off = [], 0
        for n in sizes:
            out.append(bytearray(inline[off : off + n]))
            off += n
        return out
    return Assembly(header, recv, into=into).fill()


class Incomplete(ConnectionError):
    """A message's frames stopped coming (its connection dropped, or a frame was malformed) before
    the buffer waited for was complete: what ``Assembly.wait`` raises."""


class Assembly:
    """A message's buffers filled frame by frame by one thread (``fill``) while another takes each
    one as soon as it is complete (``wait``): a worker writes a large ``sync`` into its mirror while
    the rest of the request is still arriving.  ``eager``: the buffers exist from the start (``_alloc``:
    no page is touched before its bytes arrive); else each is made as its first frame comes (a
    header's sizes are not trusted with memory sooner), or is that frame itself when it is the whole
    buffer.  ``window``: of buffers ``first`` to ``end`` (None: the last), once a consumer has begun (``begin``), at most that
    many are held - each ``release``d when used - so a large sync goes through the same memory again
    and again (filestream.py says why) and the sender waits meanwhile (TCP's own flow control).
    ``into``: ``recv`` takes ``into=`` (``wsclient.Connection.recv``) and receives a large frame
    straight into its place in the buffer (``_place``), where a frame was otherwise copied there."""

    def __init__(self, header: dict, recv: Callable[[], object], eager: bool = False,
                 window: int | None = None, first: int = 0, end: int | None = None, into: bool = False):
        self.sizes = header.get("buffers", [])
        self.buffers = [_alloc(n) for n in self.sizes] if eager else [None] * len(self.sizes)
        self.complete = 0  # buffers [0, complete) are filled
        self.error: BaseException | None = None
        self._recv = recv
        self._cond = threading.Condition()
        self.window, self.first = window, first
        # (the span is the sync's files alone: the buffers after them - a function call's - are kept)
        self.end = len(self.sizes) if end is None else min(end, len(self.sizes))
        self.held = 0  # buffers from ``first`` on filled and not released
        self._active = False  # a consumer began: the window holds
        self._unwanted: set = set()  # released before they came: dropped as they do
        self.abandoned = False  # nobody takes any more of them: each is dropped as it comes
        self._into = into
        self._at = (0, 0)  # (buffer, bytes of it filled): where ``_place`` puts the next frame
        self._placed = None  # the view ``_place`` gave for the frame being received

    def fill(self) -> list:
        """Read the message's frames into the buffers, in order; the buffers.  A failure is kept
        for ``wait`` and raised."""
        try:
            for i, n in enumerate(self.sizes):
                windowed = self.window is not None and self.first <= i < self.end
                if windowed and self._active and self.held >= self.window:
                    with self._cond:
                        while self._active and self.held >= self.window and not self.abandoned:
                            self._cond.wait()
                filled = 0
                while True:
                    if self._into:
                        self._at, self._placed = (i, filled), None
                        frame = self._recv(into=self._place)
                        if frame is not None and frame is self._placed:  # already in its place
                            self._placed = None
                            filled += frame.nbytes
                            if filled == n:
                                break
                            continue
                    else:
                        frame = self._recv()
                    if isinstance(frame, str):
                        raise ProtocolError("expected a binary payload frame, got a text frame")
                    fv = memoryview(frame)
                    if filled + fv.nbytes > n or (n and fv.nbytes == 0):
                        raise ProtocolError(f"payload frame of {fv.nbytes} bytes overruns a {n}-byte buffer")
                    if self.buffers[i] is None:
                        if fv.nbytes == n and isinstance(frame, bytearray) and self.window is not None:
                            self.buffers[i] = frame  # the whole buffer: no copy (writable, as promised)
                            filled = n
                            break
                        self.buffers[i] = _alloc(n)
                    memoryview(self.buffers[i])[filled : filled + fv.nbytes] = fv
                    filled += fv.nbytes
                    if filled == n:
                        break
                with self._cond:
                    if windowed:
                        if self.abandoned or i in self._unwanted:
                            self.buffers[i] = None
                        else:
                            self.held += 1
                    self.complete = i + 1
                    self._cond.notify_all()
        except BaseException as e:
            with self._cond:
                self.error = e
                self._cond.notify_all()
            raise
        return self.buffers

    def _place(self, m: int):
        """Where the frame of ``m`` bytes being received goes: a view of its place in the buffer
        being filled (made now, as it would be for the frame anyway); None for a frame that does
        not fit there (it comes as itself, and ``fill`` refuses it)."""
        i, filled = self._at
        n = self.sizes[i]
        if m == 0 or filled + m > n:
            return None
        if self.buffers[i] is None:
            self.buffers[i] = _alloc(n)
        v = memoryview(self.buffers[i])
        self._placed = (v if v.format == "B" else v.cast("B"))[filled:filled + m]
        return self._placed

    def wait(self, index: int | None = None) -> None:
        """Until buffer ``index`` (None: every buffer) is complete; ``Incomplete`` if it never will be."""
        need = len(self.sizes) if index is None else min(index + 1, len(self.sizes))
        if self.complete >= need:
            return
        with self._cond:
            while self.complete < need and self.error is None:
                self._cond.wait()
        if self.complete < need:
            raise Incomplete(f"the message stopped after {self.complete} of its {len(self.sizes)} buffers: "
                             f"{type(self.error).__name__}: {self.error}")

    def begin(self, wanted: set, least: int = 0) -> None:
        """A consumer begins taking the buffers from ``first`` on, only those in ``wanted``, needing
        up to ``least`` at once: the window (at least that) holds from now on."""
        with self._cond:
            self._active = True
            if self.window is not None:
                self.window = max(self.window, least)
            for i in range(self.first, self.end):
                if i not in wanted:
                    self._release(i)
            self._cond.notify_all()

    def release(self, index: int) -> None:
        """Buffer ``index`` (from ``first`` on) is used: its memory goes, the next one may come."""
        with self._cond:
            self._release(index)
            self._cond.notify_all()

    def _release(self, i: int) -> None:
        if not self.first <= i < self.end or self.window is None:
            return
        if i < self.complete:
            if self.buffers[i] is not None:
                self.buffers[i] = None
                self.held -= 1
        else:
            self._unwanted.add(i)

    def abandon(self) -> None:
        """Nobody takes any more of the buffers from ``first`` on: those held go, and those to come."""
        with self._cond:
            self.abandoned = True
            for i in range(self.first, min(self.complete, self.end)):
                self._release(i)
            self._cond.notify_all()


def _alloc(n: int):
    """Uninitialised writable memory: numpy.empty skips the zero-fill a bytearray would pay."""
    if n < (1 << 20):
        return bytearray(n)
    import numpy as np

    return np.empty(n, dtype=np.uint8)


def follow_frames(header: dict) -> int:
    return header.get("nframes", 0)


def with_header(header: dict, inline: memoryview) -> bytes:
    """Rebuild a first frame after a relay changed the header (e.g. stamped a sequence number)."""
    hj = schema.encode_header(header)
    return b"".join((_PREFIX.pack(MAGIC, PROTOCOL_VERSION, 0, len(hj)), hj, inline))
