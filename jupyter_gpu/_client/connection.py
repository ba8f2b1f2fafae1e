"""The kernel's blocking connection to the backend (``wsclient``: read in the cell's own thread,
~0.3 ms/cell cheaper than an asyncio client on a background thread, see ENVIRONMENT.md), over TLS
for an ``https://`` backend.  ``deadline`` (JUPYTER_GPU_BACKEND_DEADLINE) bounds a send the
backend takes nothing of; the driver bounds the waits (_client/watch.py)."""
from __future__ import annotations

import inspect

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
    def __init__(self, url: str, token: str, session_id: str):
        ws_url = url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        self.deadline = deadline()
        try:
            target, headers = f"{ws_url}/ws/session/{session_id}", {"Authorization": f"token {token}"}
            self.ws = wsclient.Connection(target, headers, send_timeout=self.deadline)
        except InvalidStatus as e:
            code = e.response.status_code
            if code in (401, 403):
                raise AuthError(f"the backend at {url} refused the token (HTTP {code})") from None
            raise ConnectionLost(f"the backend at {url} refused the connection (HTTP {code})") from None
        except (OSError, TimeoutError) as e:
            raise ConnectionLost(f"cannot reach the backend at {url}: {e}") from None
        self.url, self.token = url, token  # (a function's fan-out opens more sessions of its own)
        self.sent_bytes = 0
        welcome = self.recv(timeout=10)
        if welcome is None or welcome.type != messages.WELCOME:
            raise ProtocolMismatch(f"expected a welcome from {url}, got {welcome and welcome.header}")
        if welcome.header.get("protocol") != framing.PROTOCOL_VERSION:
            raise ProtocolMismatch(
                f"the backend speaks protocol {welcome.header.get('protocol')}, this kernel {framing.PROTOCOL_VERSION}"
            )
        self.welcome = welcome.header

    def send(self, header: dict, buffers=()) -> int:
        frames = framing.encode(header, buffers)
        n = 0
        try:
            for f in frames:
                self.ws.send(f)
                n += len(f) if isinstance(f, bytes) else f.nbytes
        except ConnectionClosed as e:
            raise ConnectionLost(f"the connection to the backend closed: {e}") from None
        except TimeoutError:
            raise BackendTimeout(f"the backend at {self.url} took nothing of what this kernel sent for "
                                 f"{self.deadline:g} s ({settings.BACKEND_DEADLINE.name})") from None
        return n

    def recv(self, timeout: float | None = None) -> framing.Message | None:
        """The next message, or None when ``timeout`` passes first."""
        try:
            frame = self.ws.recv(timeout=timeout)
        except TimeoutError:
            return None
        except ConnectionClosed as e:
            raise ConnectionLost(f"the connection to the backend closed: {e}") from None
        header, inline = framing.parse_first(frame)
        return framing.Message(header, framing.assemble(header, inline, self.ws.recv))

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
