"""How a message becomes frames, and frames a message: the framing the kernel side, the backend and
the worker agent share (what a header may hold is ``messages.py``).

Every message is one *binary* websocket frame::

    b"JG" | version:u8 | flags:u8 | header_len:u32le | header (JSON object) | inline payload

The header is a small JSON object with at least ``"type"``, validated as it is decoded against its
type's definition in ``messages.py``.  Payload buffers (pickles and the
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
from dataclasses import dataclass, field
from typing import Callable, Sequence

from jupyter_gpu._wire import messages

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
    hj = messages.encode_header(head)
    if len(hj) > MAX_HEADER:
        raise HeaderTooLarge(f"a {head.get('type')!r} message's header is {len(hj)} bytes, more than the "
                             f"{MAX_HEADER} a header may be")
    first = [_PREFIX.pack(MAGIC, PROTOCOL_VERSION, 0, len(hj)), hj]
    if inline:
        first.extend(views)
    return [b"".join(first)] + frames_after


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
        header = messages.decode(mv[PREFIX_SIZE : PREFIX_SIZE + hlen].tobytes())
    except messages.SchemaError as e:
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


def assemble(header: dict, inline: memoryview, recv: Callable[[], object]) -> list:
    """Read the rest of a message with ``recv()`` and return its buffers as writable memory.

    Inline buffers are copied out of the frame (frames are immutable bytes; numpy arrays rebuilt
    from them must be writable).  Large buffers are allocated once and filled frame by frame.
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
    out = []
    for n in sizes:
        dest = _alloc(n)
        dv = memoryview(dest)
        filled = 0
        while True:
            frame = recv()
            if isinstance(frame, str):
                raise ProtocolError("expected a binary payload frame, got a text frame")
            fv = memoryview(frame)
            if filled + fv.nbytes > n or (n and fv.nbytes == 0):
                raise ProtocolError(f"payload frame of {fv.nbytes} bytes overruns a {n}-byte buffer")
            dv[filled : filled + fv.nbytes] = fv
            filled += fv.nbytes
            if filled == n:
                break
        out.append(dest)
    return out


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
    hj = messages.encode_header(header)
    return b"".join((_PREFIX.pack(MAGIC, PROTOCOL_VERSION, 0, len(hj)), hj, inline))
