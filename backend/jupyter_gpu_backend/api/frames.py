"""Reading a websocket's frames, for both doors (kernels and workers), and the close codes they use.

A message is a first frame (its header) and ``framing.follow_frames(header)`` binary frames after
it (``jupyter_gpu/_wire/framing.py``).  A peer gone is ``Disconnected``.
"""
from __future__ import annotations

from fastapi import WebSocket

from jupyter_gpu._wire import framing

CLOSE_POLICY = 1008  # wrong credentials
CLOSE_PROTOCOL = 1002
CLOSE_RESTART = 1012


class Disconnected(Exception):
    pass


async def recv_frame(ws: WebSocket):
    msg = await ws.receive()
    if msg["type"] == "websocket.disconnect":
        raise Disconnected()
    data = msg.get("bytes")
    return data if data is not None else msg.get("text", "")


async def iter_frames(header: dict, ws: WebSocket):
    """The binary frames that follow ``header``'s frame."""
    for _ in range(framing.follow_frames(header)):
        frame = await recv_frame(ws)
        if isinstance(frame, str):
            raise framing.ProtocolError("expected a binary payload frame, got a text frame")
        yield frame


async def drain(header: dict, ws: WebSocket) -> None:
    """Read and drop the frames that follow ``header``'s (a message refused)."""
    async for _ in iter_frames(header, ws):
        pass
