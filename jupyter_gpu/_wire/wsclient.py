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

Once the handshake is done this client reads the frames' headers itself (``_parse``): a final,
unmasked binary frame - every data frame a backend sends - is taken straight from the socket, and
one of ``BIG_FRAME`` or more goes into its destination with ``recv_into`` (``recv(into=...)``: a
``framing.Assembly``'s buffer), no copy on the way.  Through websockets' parser a 4 MiB frame was
copied three times (its StreamReader, read_exact, the Assembly): the worker's reader thread spent
~0.5 s of CPU of a first sync of 540 MB there (issue 21).  Every other frame (ping, pong, close,
text, fragments; anything once the connection is closing) is fed whole to the protocol object,
which answers and closes exactly as before.
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
from jupyter_gpu._wire.tcp import keepalive

RECV_SIZE = 1 << 20
BIG_FRAME = 1 << 16  # a binary frame this large is masked and written here, not by the protocol object
_HEAD = struct.Struct("!BBQ")  # FIN + binary, masked + 64-bit length (a frame of 64 KiB or more)
_LEN16, _LEN64 = struct.Struct("!H"), struct.Struct("!Q")
MAX_RESPONSE_HEAD = 1 << 20  # a handshake response's head longer than this: the protocol object refuses it
_FIN_BINARY = 0x82  # FIN, no RSV bits (no extension is negotiated), binary


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
        # bytes read and not parsed yet: _rbuf[_lo:_hi] (``_own``: frames are parsed here, from the
        # handshake's end on); ``_pending``: a large data frame being received into its destination,
        # [what recv returns, a view of its payload, bytes there so far]
        self._rbuf = bytearray(RECV_SIZE)
        self._lo = self._hi = 0
        self._own = False
        self._pending: list | None = None
        self._gone = False  # a reply to the peer (a pong, a close) found the connection gone
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

    def _read(self, timeout: float | None, wake_fd: int | None = None, into=None) -> bool:
        """Read what the socket has (waiting up to ``timeout``); False when nothing came or
        ``wake_fd`` became readable (its bytes are consumed).  ``into``: see ``recv``."""
        if (timeout is not None or wake_fd is not None) and not (self.tls and self.sock.pending()):
            fds = [self.sock] if wake_fd is None else [self.sock, wake_fd]
            ready, _, _ = select.select(fds, [], [], timeout)
            if wake_fd is not None and wake_fd in ready:
                os.read(wake_fd, 4096)
                return False
            if not ready:
                return False
        pending = self._pending
        try:
            if pending is not None:  # the rest of a large frame, straight into its destination
                n = self.sock.recv_into(pending[1][pending[2]:])
            else:
                if self._hi == len(self._rbuf):  # a frame bigger than the buffer is fed whole: room
                    self._rbuf.extend(bytes(len(self._rbuf)))
                n = self.sock.recv_into(memoryview(self._rbuf)[self._hi:])
        except OSError:
            n = 0
        self._gone = False
        if not n:
            if not self._own:
                self._feed(self._lo, self._hi)  # (a handshake's last bytes)
            with self._proto_lock:
                self.protocol.receive_eof()  # (mid-frame or not: "unexpected end of stream", 1006)
                events = self.protocol.events_received()
            self._events(events)
        else:
            self.heard = time.monotonic()
            if pending is not None:
                pending[2] += n
                if pending[2] == pending[1].nbytes:
                    self._messages.append(pending[0])
                    self._pending = None
            else:
                self._hi += n
                if not self._own:
                    self._handshake()
                if self._own:
                    self._parse(into)
        if not n or self._gone:
            if not n:
                with self._send_lock:  # a close reply; a sender's frames are never taken here
                    try:
                        self._flush()
                    except OSError:
                        pass
            if not self._messages:
                raise self._closed()
        if self.protocol.state is State.CLOSED and not self._messages:
            raise self._closed()
        return True

    def _handshake(self) -> None:
        """Feed the protocol object the handshake's response, and nothing after it: a 101's frames
        are parsed here from then on (``_own``).  Any other response (a body, a failure) and all
        that follows goes to the protocol object, as it comes."""
        buf = self._rbuf
        if self.protocol.state is State.CONNECTING:
            end = buf.find(b"\r\n\r\n", self._lo, self._hi)
            if end < 0 and self._hi - self._lo < MAX_RESPONSE_HEAD:
                return  # the rest of the response's head is still to come
            stop = self._hi if end < 0 else end + 4
            self._feed(self._lo, stop)
            if self.protocol.state is State.OPEN and not self.protocol.reader.buffer:
                self._own = True
                return
        self._feed(self._lo, self._hi)
        self._lo = self._hi = 0

    def _feed(self, lo: int, hi: int) -> None:
        """The protocol object takes bytes lo:hi of the buffer (whole frames, or the handshake's)."""
        if hi > lo:
            with self._proto_lock:
                self.protocol.receive_data(bytes(self._rbuf[lo:hi]))
                events = self.protocol.events_received()
            self._lo = hi
            self._events(events)

    def _parse(self, into) -> None:
        """Take every whole frame in the buffer, in order; a large data frame whose payload is not
        all there yet becomes ``_pending`` (received into its destination from then on)."""
        buf, lo, hi = self._rbuf, self._lo, self._hi
        while hi - lo >= 2:
            b0, b1 = buf[lo], buf[lo + 1]
            n, head = b1 & 0x7F, 2
            if n == 126:
                if hi - lo < 4:
                    break
                n, head = _LEN16.unpack_from(buf, lo + 2)[0], 4
            elif n == 127:
                if hi - lo < 10:
                    break
                n, head = _LEN64.unpack_from(buf, lo + 2)[0], 10
            start = lo + head
            if b0 == _FIN_BINARY and not b1 & 0x80 and not self._parts and self.protocol.state is State.OPEN:
                if n >= BIG_FRAME:
                    dest = into(n) if into is not None and not self._messages else None
                    if dest is None:
                        dest = bytearray(n)
                    view = memoryview(dest)
                    have = min(n, hi - start)
                    view[:have] = memoryview(buf)[start:start + have]
                    lo = start + have
                    if have < n:
                        self._pending = [dest, view, have]
                        break
                    self._messages.append(dest)
                    into = None
                    continue
                if hi - start < n:
                    break
                self._messages.append(bytes(buf[start:start + n]))
                lo = start + n
                continue
            # anything else, whole, through the protocol object (a masked frame from a server too:
            # it fails the connection as it should; its mask key is counted in its length)
            end = start + n + (4 if b1 & 0x80 else 0)
            if hi < end:
                break
            self._feed(lo, end)
            lo = end
        if lo == hi:
            self._lo = self._hi = 0
        else:  # (a partial header, or a partial small frame: moved to the front, where reads append)
            rest = hi - lo
            buf[:rest] = buf[lo:hi]
            self._lo, self._hi = 0, rest

    def _events(self, events: list) -> None:
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
            elif event.opcode in (Opcode.PING, Opcode.CLOSE):
                with self._send_lock:  # a pong or close reply; a sender's frames are never taken here
                    try:
                        self._flush()
                    except OSError:  # the peer is gone already (a backend that exited): closed
                        self._gone = True

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

    def recv(self, timeout: float | None = None, wake_fd: int | None = None, into=None):
        """The next message; TimeoutError when ``timeout`` passes or ``wake_fd`` wakes us first.

        ``into(n)``: where the next message goes if it is a binary frame of ``BIG_FRAME`` bytes or
        more - a writable view of ``n`` bytes, which is then what is returned, or None (the message
        is its own bytearray, as without ``into``).  A caller that gives up on a message (a
        timeout) half way through such a frame leaves it to the next ``recv``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._messages:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._read(left, wake_fd=wake_fd, into=into):
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
