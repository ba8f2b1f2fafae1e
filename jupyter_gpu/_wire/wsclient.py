"""A blocking websocket client that reads the socket in the calling thread.

``websockets.sync`` reads in a background thread and hands each message over to the waiting
thread: one extra thread wake-up per message, ~0.1-0.3 ms on a busy 2-core machine, paid on every
hop of every cell.  The kernel side only ever reads from the thread that runs the cell, so it can
drive websockets' sans-I/O protocol itself.  The backend does not send pings (an idle kernel reads
nothing and could not answer them); TCP keepalive finds dead peers instead.  A kernel waiting on a
cell pings the backend itself when it has heard nothing for a while (``heard``, ``ping``: the
driver's deadline, jupyter_gpu/_client/watch.py).

``wss://`` is the same client over TLS (``ssl``), the certificate verified against the system's
CAs and ``JUPYTER_GPU_CAFILE`` (a self-signed backend's certificate): kernels and workers alike.
"""
from __future__ import annotations

import functools
import os
import select
import socket
import ssl
import struct
import threading
import time

from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Opcode, apply_mask
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from jupyter_gpu._wire import settings

RECV_SIZE = 1 << 20
BIG_FRAME = 1 << 16  # a binary frame this large is masked and written here, not by the protocol object
_HEAD = struct.Struct("!BBQ")  # FIN + binary, masked + 64-bit length (a frame of 64 KiB or more)


@functools.lru_cache(maxsize=8)
def tls_context(cafile: str | None = None) -> ssl.SSLContext:
    """A client context that verifies the backend's certificate and host name: the system's CAs,
    plus ``cafile`` (default ``JUPYTER_GPU_CAFILE``), e.g. a self-signed backend's own certificate."""
    ctx = ssl.create_default_context()
    cafile = cafile or settings.CAFILE.get()
    if cafile:
        ctx.load_verify_locations(cafile)
    return ctx


def https_context(url: str) -> ssl.SSLContext | None:
    """``urlopen``'s context for a backend URL: the verifying one for https://, else None."""
    return tls_context() if url.startswith("https://") else None


def keepalive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 15), ("TCP_KEEPCNT", 4)):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)


class Connection:
    """``send(bytes)`` a binary message, ``recv(timeout)`` the next one (bytes), ``close()``.

    Any thread may send (frames are written whole, in order); one thread at a time may receive.
    """

    def __init__(self, url: str, headers: dict, open_timeout: float = 10.0, send_timeout: float | None = None,
                 cafile: str | None = None, unix_socket: str | None = None):
        uri = parse_uri(url)
        if unix_socket:  # the URL's host still names the backend (its certificate, the Host header)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(open_timeout)
            try:
                sock.connect(unix_socket)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((uri.host, uri.port), timeout=open_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            keepalive(sock)
        if send_timeout:  # a send the peer takes nothing of for this long fails (the kernel's deadline):
            # set in the kernel's socket, so it costs no per-send work here
            sec = int(send_timeout)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                            struct.pack("ll", sec, int((send_timeout - sec) * 1e6)))
        self.tls = uri.secure
        if self.tls:
            try:
                sock = tls_context(cafile).wrap_socket(sock, server_hostname=uri.host)
            except BaseException:
                sock.close()
                raise
        self.sock = sock
        self.heard = time.monotonic()  # when the peer last sent anything (a pong too)
        self.protocol = ClientProtocol(uri, max_size=None)
        self._proto_lock = threading.Lock()  # the sans-I/O protocol object is not thread-safe
        self._send_lock = threading.Lock()  # keeps each sender's frames whole and in order
        request = self.protocol.connect()
        for k, v in headers.items():
            request.headers[k] = v
        self.protocol.send_request(request)
        self._flush()
        self._messages: list = []
        self._parts: list = []
        deadline = time.monotonic() + open_timeout
        while self.protocol.state is State.CONNECTING:
            self._read(max(0.0, deadline - time.monotonic()) or 1e-3)
            if time.monotonic() > deadline and self.protocol.state is State.CONNECTING:
                raise TimeoutError("websocket handshake timed out")
        if self.protocol.handshake_exc is not None:
            raise self.protocol.handshake_exc
        self.sock.settimeout(None)

    def _closed(self) -> ConnectionClosed:
        p = self.protocol
        return ConnectionClosed(p.close_rcvd, p.close_sent, p.close_rcvd_then_sent)

    @property
    def open(self) -> bool:
        return self.protocol.state is State.OPEN

    def _flush(self) -> None:
        with self._proto_lock:
            chunks = self.protocol.data_to_send()
        for data in chunks:
            if data:
                self.sock.sendall(data)
            else:  # the protocol asks us to half-close
                try:
                    self.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def _read(self, timeout: float | None, wake_fd: int | None = None) -> bool:
        """Read what the socket has (waiting up to ``timeout``); False when nothing came or
        ``wake_fd`` became readable (its bytes are consumed)."""
        if (timeout is not None or wake_fd is not None) and not (self.tls and self.sock.pending()):
            fds = [self.sock] if wake_fd is None else [self.sock, wake_fd]
            ready, _, _ = select.select(fds, [], [], timeout)
            if wake_fd is not None and wake_fd in ready:
                os.read(wake_fd, 4096)
                return False
            if not ready:
                return False
        try:
            data = self.sock.recv(RECV_SIZE)
        except OSError:
            data = b""
        with self._proto_lock:
            if data:
                self.heard = time.monotonic()
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            events = self.protocol.events_received()
        for event in events:
            if isinstance(event, Response):
                if event.status_code != 101:
                    raise InvalidStatus(event)
            elif event.opcode in (Opcode.BINARY, Opcode.TEXT, Opcode.CONT):
                self._parts.append(event.data)
                if event.fin:
                    msg = b"".join(self._parts) if len(self._parts) > 1 else self._parts[0]
                    self._messages.append(msg.decode() if event.opcode is Opcode.TEXT else msg)
                    self._parts = []
        if not data or any(getattr(e, "opcode", None) in (Opcode.PING, Opcode.CLOSE) for e in events):
            with self._send_lock:  # a pong or close reply; a sender's frames are never taken here
                try:
                    self._flush()
                except OSError:  # the peer is gone already (a backend that exited): closed, as below
                    data = b""
        if not data and not self._messages:
            raise self._closed()
        if self.protocol.state is State.CLOSED and not self._messages:
            raise self._closed()
        return True

    def closed_by_peer(self) -> bool:
        """Whether the peer has closed (its close frame, or EOF, is waiting unread): looked at
        without waiting (~2 us), so a request is not sent into a connection that is already gone."""
        if self.protocol.state is not State.OPEN:
            return True
        if not (self.tls and self.sock.pending()) and not select.select([self.sock], [], [], 0)[0]:
            return False
        try:
            self._read(0)  # (a message that came is kept for recv)
        except (ConnectionClosed, OSError):
            return True
        return self.protocol.state is not State.OPEN

    def pump(self) -> None:
        """Read what the peer sent already, without waiting (a pong: ``heard``); its messages are
        kept for ``recv``.  For a connection another wait is not reading (a lane cell's backend)."""
        self.closed_by_peer()

    def ping(self) -> None:
        """Ask the peer for a pong (its answer moves ``heard``); a connection that is gone: nothing."""
        if self.protocol.state is not State.OPEN:
            return
        with self._send_lock:
            with self._proto_lock:
                self.protocol.send_ping(os.urandom(4))
            try:
                self._flush()
            except OSError:
                pass

    def buffered(self) -> bool:
        """True when a whole message was already read and waits to be taken."""
        return bool(self._messages)

    def recv(self, timeout: float | None = None, wake_fd: int | None = None):
        """The next message; TimeoutError when ``timeout`` passes or ``wake_fd`` wakes us first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._messages:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._read(left, wake_fd=wake_fd):
                if wake_fd is not None or (deadline is not None and time.monotonic() >= deadline):
                    raise TimeoutError()
        return self._messages.pop(0)

    def send(self, data) -> None:
        if self.protocol.state is not State.OPEN:
            raise self._closed()
        with self._send_lock:
            try:
                if len(data) >= BIG_FRAME and (not isinstance(data, memoryview) or data.itemsize == 1):
                    # a payload chunk: one copy (the mask) where the protocol object makes three
                    # (bytes(), the mask, its BytesIO); frames are whole, so its state is not concerned
                    mask = os.urandom(4)
                    self.sock.sendall(_HEAD.pack(0x82, 0x80 | 127, len(data)) + mask)
                    self.sock.sendall(apply_mask(data, mask))
                    return
                with self._proto_lock:
                    self.protocol.send_binary(data if isinstance(data, bytes) else bytes(data))
                self._flush()
            except BlockingIOError:  # SO_SNDTIMEO: the peer took nothing for send_timeout; half a frame
                # may be out, so the connection cannot go on
                self.abort()
                raise TimeoutError("the peer took nothing of a message for the send timeout") from None
            except OSError:
                raise self._closed() from None

    def abort(self) -> None:
        """Shut the socket at once, without a close handshake (a peer that takes nothing)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        try:
            if self.protocol.state is State.OPEN:
                with self._send_lock:
                    with self._proto_lock:
                        self.protocol.send_close()
                    self._flush()
        except OSError:
            pass
        self.sock.close()
