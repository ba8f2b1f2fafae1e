"""The direct lane: a warm cell's messages between a kernel and its worker on the same host.

A warm cell through the backend costs four process hops (kernel -> backend -> worker -> backend ->
kernel), each a wake-up of an idle process; on our 2-core VMs that alone is most of the distance
to a local cell.  When the worker shares the kernel's host, the backend hands the kernel (in a
cell's ``done``) the path of a Unix socket the worker listens on and the secret the worker
registered with; later warm cells of that lease go straight to the worker and back.  The backend
stays the door: only it gives out the secret (after checking the kernel's token and that the
worker serves this session), the worker reports every lane cell's timings to it (``metered``) for
the ledger and the keep-warm window, kills and cold starts still go through it, and a kernel that
loses its lane asks it what happened (``lane_lost``).

Framing: every protocol frame (``framing.encode``) is preceded by its length (u64le); the first
message on a new connection is ``lane_hello {secret, session}``, answered ``lane_ok``.
"""
from __future__ import annotations

import os
import secrets
import select
import socket
import struct
import threading
import time

from jupyter_gpu._wire import framing, messages

HELLO, OK = messages.LANE_HELLO, messages.LANE_OK
_LEN = struct.Struct("<Q")
_MAX_FRAME = framing.CHUNK + framing.MAX_HEADER + framing.INLINE_MAX + 64  # the largest a peer may send


class LaneClosed(ConnectionError):
    """The other end of a lane closed (or reset) it."""


class LaneConnection:
    """One lane: ``send(header, buffers)``, ``recv(timeout)`` -> Message or None, ``close()``.

    Any thread may send (messages are written whole, in order); one thread at a time may receive.
    """

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._send_lock = threading.Lock()
        self._buf = bytearray()
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    # -- sending -------------------------------------------------------------------------------
    def send(self, header: dict, buffers=()) -> int:
        frames = framing.encode(header, buffers)
        n = 0
        with self._send_lock:
            try:
                for f in frames:
                    size = len(f) if isinstance(f, bytes) else f.nbytes
                    if size < 65536:  # one write for a small frame and its length
                        self.sock.sendall(_LEN.pack(size) + bytes(f))
                    else:
                        self.sock.sendall(_LEN.pack(size))
                        self.sock.sendall(f)
                    n += size
            except OSError as e:
                self.closed = True
                raise LaneClosed(f"the lane closed while sending: {e}") from None
        return n

    # -- receiving -----------------------------------------------------------------------------
    def readable(self, timeout: float = 0.0) -> bool:
        """True when a message (or the close) is waiting, without consuming it."""
        if len(self._buf) >= _LEN.size:
            return True
        ready, _, _ = select.select([self.sock], [], [], timeout)
        return bool(ready)

    def _read(self, n: int, wait: bool) -> bool:
        """Add what the socket has (up to ``n`` bytes, at least 64 KiB asked) to the buffer,
        waiting for something only if ``wait``; False when nothing was there."""
        try:
            chunk = self.sock.recv(max(n, 1 << 16), 0 if wait else socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError as e:
            self.closed = True
            raise LaneClosed(f"the lane was reset: {e}") from None
        if not chunk:
            self.closed = True
            raise LaneClosed("the other end closed the lane")
        self._buf += chunk
        return True

    def _fill(self, n: int, deadline: float | None) -> bool:
        """Make the buffer hold at least ``n`` bytes; False when ``deadline`` passes first."""
        while len(self._buf) < n:
            # what is already there is read without asking select first (one system call less)
            if self._read(n - len(self._buf), wait=deadline is None):
                continue
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                return False
        return True

    def _frame_size(self) -> int:
        """The length of the frame the buffer starts with (its prefix must be there)."""
        (size,) = _LEN.unpack_from(self._buf)
        if size > _MAX_FRAME:
            self.closed = True
            raise framing.ProtocolError(f"lane frame of {size} bytes is larger than any frame of this protocol")
        return size

    def recv_frame(self, timeout: float | None = None, whole: bool = False) -> bytes | None:
        """The next frame; None when ``timeout`` passes before it begins (``whole``: before all of
        it is here - a peer not yet trusted that sends a part and stops must not hold the reader)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._fill(_LEN.size, deadline):
            return None
        size = self._frame_size()
        if not self._fill(_LEN.size + size, deadline if whole else None):  # a frame that started is read whole
            return None
        frame = bytes(self._buf[_LEN.size:_LEN.size + size])
        del self._buf[:_LEN.size + size]
        return frame

    def recv_ready(self) -> framing.Message | None:
        """The next message if all of it is here already, in one frame; else None, and nothing
        is taken.  Never waits."""
        if len(self._buf) < (1 << 16):
            self._read(1 << 16, wait=False)
        if len(self._buf) < _LEN.size:
            return None
        size = self._frame_size()
        if len(self._buf) < _LEN.size + size:
            return None
        header, inline = framing.parse_first(bytes(self._buf[_LEN.size:_LEN.size + size]))
        if framing.follow_frames(header):
            return None  # recv reads the rest as it comes
        del self._buf[:_LEN.size + size]
        return framing.Message(header, framing.assemble(header, inline, None))

    def recv(self, timeout: float | None = None) -> framing.Message | None:
        """The next message, or None when ``timeout`` passes first."""
        frame = self.recv_frame(timeout)
        if frame is None:
            return None
        header, inline = framing.parse_first(frame)
        return framing.Message(header, framing.assemble(header, inline, self.recv_frame))

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


def connect(path: str, secret: str, session: str, timeout: float = 2.0) -> LaneConnection:
    """Kernel side: open the lane of a worker; raises LaneClosed (or OSError) if it is not there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    sock.settimeout(None)
    conn = LaneConnection(sock)
    conn.send({"type": HELLO, "secret": secret, "session": session})
    reply = conn.recv(timeout)
    if reply is None or reply.type != OK:
        conn.close()
        why = reply.header.get("message") if reply is not None else "no answer"
        raise LaneClosed(f"the worker refused the lane: {why}")
    return conn


class Listener:
    """Worker side: the Unix socket a kernel's lane connects to, and the secret it must show."""

    def __init__(self, directory: str, worker_id: str):
        self.path = os.path.join(directory, f"{worker_id}.sock")
        self.secret = secrets.token_urlsafe(24)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket file is the owner's alone
        try:
            self.sock.bind(self.path)
        finally:
            os.umask(old)
        self.sock.listen(4)

    def fileno(self) -> int:
        return self.sock.fileno()

    def describe(self) -> dict:
        return {"path": self.path, "secret": self.secret}

    def accept(self, session: str | None, timeout: float = 2.0) -> LaneConnection | None:
        """Accept one kernel; it must show the secret and be the session this worker serves."""
        sock, _ = self.sock.accept()
        conn = LaneConnection(sock)
        try:  # the hello is one frame, whole within the timeout: a part of one never holds the reader
            frame = conn.recv_frame(timeout, whole=True)
            h = None if frame is None else framing.parse_first(frame)[0]
        except Exception:  # (LaneClosed, ProtocolError, or bytes that are no message at all)
            conn.close()
            return None
        if not isinstance(h, dict) or h.get("type") != HELLO:
            conn.close()
            return None
        if not secrets.compare_digest(str(h.get("secret", "")), self.secret):
            why = "wrong lane secret"
        elif session is None or h.get("session") != session:
            why = "this worker serves another session"
        else:
            conn.send({"type": OK})
            return conn
        try:
            conn.send(messages.failure("unauthorized", why))
        except LaneClosed:
            pass
        conn.close()
        return None

    def close(self) -> None:
        try:
            self.sock.close()
            os.unlink(self.path)
        except OSError:
            pass
