"""The kernel's blocking connection to the backend (``wsclient``: read in the cell's own thread,
~0.3 ms/cell cheaper than an asyncio client on a background thread, see ENVIRONMENT.md), over TLS
for an ``https://`` backend.  ``deadline`` (JUPYTER_GPU_BACKEND_DEADLINE) bounds a send the
backend takes nothing of; the driver bounds the waits (_client/watch.py)."""
from __future__ import annotations

import inspect
import time

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from jupyter_gpu._wire import framing, messages, settings, wsclient
from jupyter_gpu.errors import AuthError, BackendTimeout, ConnectionLost, ProtocolMismatch


# websockets >= 17 wants long-lived connections opened with legacy=True (older versions lack it)
_DIRECT = {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}


def open_websocket(url: str, headers: dict, open_timeout: float = 10):
    """A long-lived blocking websocket: no compression (payloads), no size cap (we chunk)."""
    return connect(url, additional_headers=headers, max_size=None, compression=None,
                   open_timeout=open_timeout, **_DIRECT)


def deadline() -> float:
    """JUPYTER_GPU_BACKEND_DEADLINE, in seconds: positive and finite."""
    raw = settings.BACKEND_DEADLINE.get()
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0 < value < float("inf"):
        raise ValueError(f"{settings.BACKEND_DEADLINE.name}={raw!r}: expected a number of seconds > 0")
    return value


class BackendClient:
    """The kernel's session on the backend.  Every event the backend sends carries the session's
    ``seq``; this client keeps the last it took.  A connection that drops without a close (a reset,
    a proxy or network that cut it) is opened again, with backoff, for up to ``RESUME_WINDOW``
    seconds, asking to resume after that ``seq``: the backend replays what followed (it keeps the
    events a kernel has not acknowledged: ``ack`` every ``ACK_EVERY`` events, and with each
    execute), so the cell reading its events sees neither a gap nor a duplicate.  A deliberate close
    (the backend exiting, a policy close) is not resumed: it is ``ConnectionLost``, as before."""

    ACK_EVERY = 256  # events between acknowledgements during a long cell (one small message each)
    RESUME_WINDOW = 10.0  # seconds a dropped connection is tried again for

    def __init__(self, url: str, token: str, session_id: str):
        self.url, self.token = url, token  # (a function's fan-out opens more sessions of its own)
        self.session_id = session_id
        self.deadline = deadline()
        self.sent_bytes = 0
        self.seq = 0  # the last event of the session this kernel took
        self._unacked = 0
        self.resumes = 0  # connections resumed (tests and benchmarks read it)
        self._open(None)

    def _open(self, resume: int | None) -> None:
        ws_url = self.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        headers = {"Authorization": f"token {self.token}"}
        if resume is not None:
            headers["X-Jupyter-Gpu-Resume"] = str(resume)
        try:
            self.ws = wsclient.Connection(f"{ws_url}/ws/session/{self.session_id}", headers,
                                          send_timeout=self.deadline)
        except InvalidStatus as e:
            code = e.response.status_code
            if code in (401, 403):
                raise AuthError(f"the backend at {self.url} refused the token (HTTP {code})") from None
            raise ConnectionLost(f"the backend at {self.url} refused the connection (HTTP {code})") from None
        except (OSError, TimeoutError, ConnectionClosed) as e:  # (closed mid-handshake: a backend stopping)
            raise ConnectionLost(f"cannot reach the backend at {self.url}: {e}") from None
        try:
            frame = self.ws.recv(timeout=10)
        except TimeoutError:
            frame = None
        except ConnectionClosed as e:
            raise ConnectionLost(f"the connection to the backend closed: {e}") from None
        welcome = None if frame is None else framing.Message(*framing.parse_first(frame))
        if welcome is None or welcome.type != messages.WELCOME:
            raise ProtocolMismatch(f"expected a welcome from {self.url}, got {welcome and welcome.header}")
        if welcome.header.get("protocol") != framing.PROTOCOL_VERSION:
            raise ProtocolMismatch(
                f"the backend speaks protocol {welcome.header.get('protocol')}, this kernel {framing.PROTOCOL_VERSION}"
            )
        self.welcome = welcome.header

    def _resume(self, why: Exception) -> None:
        """The connection dropped (``why``): open it again and ask for what followed ``seq``;
        ConnectionLost when the backend cannot be reached within RESUME_WINDOW."""
        self.ws.abort()
        t0, pause = time.monotonic(), 0.02
        while True:
            try:
                self._open(self.seq)
                self.resumes += 1
                self._unacked = 0
                return
            except AuthError:
                raise
            except (ConnectionLost, ProtocolMismatch) as e:
                if time.monotonic() - t0 + pause > self.RESUME_WINDOW:
                    raise ConnectionLost(f"the connection to the backend at {self.url} dropped ({why}) and "
                                         f"could not be opened again for {self.RESUME_WINDOW:g} s: {e}") from None
            time.sleep(pause)  # backoff between attempts at a backend that is not there (yet)
            pause = min(pause * 2, 0.5)

    def send(self, header: dict, buffers=(), resumable: bool | None = None, stream=None) -> int:
        """Send a message; one that is not a cell's request (an ack, an interrupt, an input reply)
        is sent again on a connection resumed after a drop (``resumable``: say otherwise).
        ``stream``: more buffers after ``buffers``, still being read as this sends (a cell's sync,
        notebook/files.py: its ``sizes``, ``take(i)``, ``release(i)``)."""
        if header.get("type") == messages.EXECUTE:
            header["ack"] = self.seq  # the backend may forget what came before
            self._unacked = 0
            if resumable is None:
                resumable = False  # half of it may have gone: sent again, it could run twice
        if stream is None:
            frames = framing.encode(header, buffers)
        else:  # (only a cell's request, never sent twice: a generator will do)
            base = list(buffers)
            first = len(base)
            frames = framing.streamed(
                header, [memoryview(b).nbytes for b in base] + stream.sizes,
                lambda i: base[i] if i < first else stream.take(i - first),
                lambda i: i >= first and stream.release(i - first))
        while True:
            n = 0
            try:
                for f in frames:
                    self.ws.send(f)
                    n += len(f) if isinstance(f, bytes) else f.nbytes
                return n
            except ConnectionClosed as e:
                if not (resumable is not False and _dropped(e)):
                    raise ConnectionLost(f"the connection to the backend closed: {e}") from None
                self._resume(e)
            except TimeoutError:
                raise BackendTimeout(f"the backend at {self.url} took nothing of what this kernel sent for "
                                     f"{self.deadline:g} s ({settings.BACKEND_DEADLINE.name})") from None
            finally:
                if stream is not None:
                    stream.close()  # (sent, or failed half way: its reader stops)

    def recv(self, timeout: float | None = None) -> framing.Message | None:
        """The next message, or None when ``timeout`` passes first (an event this kernel took
        before a resume, replayed, is skipped)."""
        while True:
            try:
                frame = self.ws.recv(timeout=timeout)
                header, inline = framing.parse_first(frame)
                msg = framing.Message(header, framing.assemble(header, inline, self.ws.recv, into=True))
            except TimeoutError:
                return None
            except ConnectionClosed as e:
                if not _dropped(e):
                    raise ConnectionLost(f"the connection to the backend closed: {e}") from None
                self._resume(e)  # (a message half read is replayed whole)
                continue
            seq = header.get("seq")
            if seq is not None:
                if seq <= self.seq:
                    continue  # replayed, and taken before the drop
                self.seq = seq
                self._unacked += 1
                if self._unacked >= self.ACK_EVERY:
                    self._unacked = 0
                    self.send({"type": messages.ACK, "upto": seq})
            elif header["type"] == messages.FAILURE and header.get("code") == "connection_lost":
                # a resume that found no session (a restarted backend) or a gap: what follows is
                # numbered afresh, or past what this kernel has; kept, the old count hid the next
                # cells' events (all of them, up to it: the next cell hung)
                self.seq = 0
            return msg

    def recv_ready(self) -> framing.Message | None:
        """None: the backend relays a cell's events as they come, and the relay reads each one
        as it arrives (only a worker's lane may hold a short cell's whole answer already)."""
        return None

    @property
    def open(self) -> bool:
        """Open, and not closed by the backend meanwhile (a backend that restarted between two cells:
        the next one reconnects instead of failing)."""
        closed = getattr(self.ws, "closed_by_peer", None)
        return self.ws.protocol.state.name == "OPEN" and not (closed is not None and closed())


    def close(self) -> None:
        self.ws.close()

    def abort(self) -> None:
        """Close without waiting on the backend (one that answers nothing): the next cell reconnects."""
        self.ws.abort()
        self.ws.close()


def _dropped(e: ConnectionClosed) -> bool:
    """The connection ended without a close from the backend (reset, cut): worth resuming."""
    return e.rcvd is None
