"""Reading a websocket's frames, for both doors (kernels and workers), and the close codes they use.

A message is a first frame (its header) and ``framing.follow_frames(header)`` binary frames after
it (``jupyter_gpu/_wire/framing.py``).  A peer gone is ``Disconnected``.

The bytes that follow are counted as they arrive, against the buffer sizes the header declared
(which the doors check against their limits, e.g. ``--max-payload``): a frame that runs past its
buffer, or a message whose frames end before its buffers are full, is ``PayloadMismatch`` at that
frame - before it is kept or forwarded - so a peer cannot make the backend hold more than it
declared, nor hand a worker a message that would leave it waiting for bytes that never come.  A
single frame is bounded by the websocket's own limit (``MAX_FRAME``, uvicorn's ``ws_max_size``).
"""
from __future__ import annotations

from starlette.websockets import WebSocket

from jupyter_gpu._wire import framing

CLOSE_POLICY = 1008  # wrong credentials
CLOSE_PROTOCOL = 1002
CLOSE_TOO_BIG = 1009
CLOSE_RESTART = 1012
# the largest frame a peer of ours sends: a header and its inline payload, or one payload chunk
MAX_FRAME = framing.PREFIX_SIZE + framing.MAX_HEADER + max(framing.INLINE_MAX, framing.CHUNK)


class Disconnected(Exception):
    pass


class PayloadMismatch(framing.ProtocolError):
    """The frames after a header carry other bytes than it declared: ``cell``, ``declared`` bytes,
    ``real`` (what had arrived when it showed)."""

    def __init__(self, message: str, header: dict, real: int):
        super().__init__(message)
        cell = header.get("cell")
        self.cell = cell if isinstance(cell, str) else None
        self.declared = framing.payload_size(header)
        self.real = real


async def recv_frame(ws: WebSocket):
    msg = await ws.receive()
    if msg["type"] == "websocket.disconnect":
        raise Disconnected()
    data = msg.get("bytes")
    return data if data is not None else msg.get("text", "")


async def iter_frames(header: dict, ws: WebSocket):
    """The binary frames that follow ``header``'s frame, each checked against the buffer it fills
    (as ``framing.assemble`` fills them) before it is yielded."""
    n = framing.follow_frames(header)
    sizes = header.get("buffers") or ()  # (parse_first: nframes > 0 only with buffers to fill)
    i, filled, real = 0, 0, 0  # the buffer being filled, its bytes so far, the message's bytes so far
    for k in range(n):
        frame = await recv_frame(ws)
        if isinstance(frame, str):
            raise framing.ProtocolError("expected a binary payload frame, got a text frame")
        got = len(frame)
        real += got
        if i >= len(sizes) or filled + got > sizes[i] or (got == 0 and sizes[i]):
            raise PayloadMismatch(f"a payload frame of {got} bytes does not fit the {framing.payload_size(header)} "
                                  "bytes its header declared", header, real)
        filled += got
        if filled == sizes[i]:  # (an empty buffer takes one empty frame)
            i, filled = i + 1, 0
        if k == n - 1 and i < len(sizes):
            raise PayloadMismatch(f"the message's frames ended after {real} of the {framing.payload_size(header)} "
                                  "bytes its header declared", header, real)
        yield frame


async def drain(header: dict, ws: WebSocket) -> None:
    """Read and drop the frames that follow ``header``'s (a message refused)."""
    async for _ in iter_frames(header, ws):
        pass
