"""The backend's websocket connections: uvicorn's sans-I/O websocket protocol, with a large binary
frame read straight into a buffer of its own and written without the protocol object's copies.

Both doors relay a large message's payload frames (4 MiB each, ``framing.CHUNK``) from one peer to
another: a kernel's inputs or synced files to its worker, a worker's results back.  uvicorn's
protocol hands every read to websockets' parser, which appends it to its buffer, slices each frame
out of that and unmasks it; sending, it serializes header and payload into one new buffer.  For a
first sync of 10,000 files / 540 MB that was ~1.1 s of the backend's CPU on the 2-core dev VM, about
six passes over every byte.  Here (``FastFrames``), once the handshake is done:

- a client's binary frame of ``FAST_MIN`` bytes or more (and within ``ws_max_size``) is read by the
  transport into a buffer of exactly its size (``asyncio.BufferedProtocol``), unmasked once, and
  handed to the app as uvicorn would hand it;
- every other frame (text, control, small binary, one over the limit) is gathered whole and given to
  websockets' parser as before, so pings, closes, UTF-8 and size errors are still its;
- a binary message of ``FAST_MIN`` bytes or more that the app sends goes out as its header and the
  payload itself (a server's frames are not masked).
"""
from __future__ import annotations

import asyncio
import struct

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import apply_mask
from websockets.protocol import State

FAST_MIN = 64 * 1024  # smaller frames cost their header's parse more than their bytes' copies
SCRATCH = 256 * 1024  # a read outside a large frame's payload (asyncio's own read size)
_LEN16, _LEN64 = struct.Struct("!H"), struct.Struct("!Q")


class FastFrames(WebSocketsSansIOProtocol, asyncio.BufferedProtocol):
    """uvicorn's ``websockets-sansio`` protocol, large binary frames read and written here."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._scratch = memoryview(bytearray(SCRATCH))
        self._head = bytearray()  # the frame header read so far
        self._through = 0  # bytes of the current frame still to go to the parser as they come
        self._payload: memoryview | None = None  # where a large binary frame's payload is read
        self._room = bytearray()  # the memory it is read into: one buffer, used again and again
        self._at = 0
        self._mask = b""
        # frames are ours once the handshake is done with nothing after it (the parser then waits at
        # a frame's start); until then, and once a close has gone by, every byte is the parser's
        self._framing = False

    # -- reading ------------------------------------------------------------------------------
    def get_buffer(self, sizehint: int):
        if self._payload is not None:
            return self._payload[self._at:]
        return self._scratch

    def buffer_updated(self, nbytes: int) -> None:
        if self._payload is not None:
            self._at += nbytes
            if self._at == len(self._payload):
                self._deliver()
            return
        self._consume(bytes(self._scratch[:nbytes]))

    def data_received(self, data: bytes) -> None:  # (the handshake's bytes, given by the HTTP protocol)
        self._consume(data)

    def _consume(self, data: bytes) -> None:
        at, n = 0, len(data)
        while at < n:
            if not self._framing:
                super().data_received(data[at:] if at else data)
                return
            if self._payload is not None:  # a large frame's first bytes came with its header
                take = min(n - at, len(self._payload) - self._at)
                self._payload[self._at:self._at + take] = data[at:at + take]
                self._at += take
                at += take
                if self._at == len(self._payload):
                    self._deliver()
            elif self._through:
                take = min(n - at, self._through)
                self._through -= take
                at += take
                self._to_parser(data[at - take:at])
            else:
                take = min(n - at, _header_size(self._head) - len(self._head))
                self._head += data[at:at + take]
                at += take
                if len(self._head) == _header_size(self._head):
                    self._header_done()

    def _header_done(self) -> None:
        head, self._head = bytes(self._head), bytearray()
        size, off = head[1] & 0x7F, 2
        if size == 126:
            size, off = _LEN16.unpack_from(head, 2)[0], 4
        elif size == 127:
            size, off = _LEN64.unpack_from(head, 2)[0], 10
        # FIN + binary, no reserved bits, masked (as a client's must be), within the limit
        if head[0] == 0x82 and head[1] & 0x80 and FAST_MIN <= size <= (self.config.ws_max_size or size):
            self._mask = head[off:off + 4]
            if len(self._room) < size:
                self._room = bytearray(size)
            self._payload, self._at = memoryview(self._room)[:size], 0
            return
        self._through = size  # the parser's, header first: its checks (size, UTF-8, control) apply
        self._to_parser(head)

    def _to_parser(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.state is not State.OPEN or self.transport.is_closing():
            self._framing = False  # a close (or an error) went by: the rest is the parser's

    def _deliver(self) -> None:
        payload, self._payload = self._payload, None
        self.frames = [apply_mask(payload, self._mask)]
        self.curr_msg_data_type = "bytes"
        self.send_receive_event_to_app()

    # -- writing ------------------------------------------------------------------------------
    async def send(self, message) -> None:
        kind = message.get("type")
        data = message.get("bytes") if kind == "websocket.send" else None
        if (data is None or len(data) < FAST_MIN or not self._framing or self.close_sent
                or self.conn.state is not State.OPEN):
            await super().send(message)
            if kind == "websocket.accept" and self.handshake_complete and self.conn.state is State.OPEN \
                    and self.initial_response is None and not self.conn.reader.buffer:
                self._framing = True  # nothing came after the request: the parser waits at a frame's start
            return
        await self.writable.wait()
        if self.disconnected:
            raise ClientDisconnected()
        n = len(data)
        self.transport.write(bytes((0x82, 126)) + _LEN16.pack(n) if n < 65536 else bytes((0x82, 127)) + _LEN64.pack(n))
        self.transport.write(data)


def _header_size(head: bytearray) -> int:
    """The bytes of a frame header that begins with ``head`` (2 until its length byte is there)."""
    if len(head) < 2:
        return 2
    size = head[1] & 0x7F
    return 2 + (2 if size == 126 else 8 if size == 127 else 0) + (4 if head[1] & 0x80 else 0)
