"""The kernel never waits forever on a backend that answers nothing (issue 24, finding 9).

A waiting cell may be quiet for hours (a long training step prints nothing), so silence from the
cell is no sign of trouble; silence from the *backend* is.  While a cell waits on the backend's
connection and nothing has come for a third of the deadline, the kernel pings it (a websocket
ping, answered by the backend's server without any of our code, however busy the cell is); a
backend that has sent nothing, not even that pong, for ``JUPYTER_GPU_BACKEND_DEADLINE`` seconds
(default 30) fails the cell with ``BackendTimeout``.

The stop button must end the wait even then: each press (and --timeout / --max-cost, which press
it) pings the backend too, and a backend that has not answered within ``STOP_GRACE`` seconds of
the press ends the wait at once.  That holds for a cell on the worker's direct lane as well, whose
kill can only go through the backend (its connection is then read here without waiting: pongs).

Cost: the driver calls ``quiet`` only after a wait that brought nothing; an event costs nothing
here (the connection keeps one timestamp of the last bytes read, ``wsclient.Connection.heard``).
"""
from __future__ import annotations

from jupyter_gpu._wire import settings
from jupyter_gpu.errors import BackendTimeout

STOP_GRACE = 5.0  # seconds a backend has to answer after a stop press (at most the deadline)


class BackendWatch:
    def __init__(self, conn, backend, now: float):
        self.backend = backend
        self.reading = conn is backend  # the wait reads the backend itself (else: a lane cell)
        self.limit = getattr(backend, "deadline", None) or 30.0
        self.url = getattr(backend, "url", "")
        self.since = now  # the wait began (a connection idle between cells is not a silent backend)
        self.pinged = 0.0  # when the last ping went
        self.pressed: float | None = None  # when the stop button was last pressed

    @property
    def ws(self):
        """The backend's wsclient.Connection now (heard, ping, pump): another after a resume."""
        return getattr(self.backend, "ws", None)

    def press(self, now: float) -> None:
        """A stop press was sent: the backend must show it is there within STOP_GRACE."""
        self.pressed = now
        self._ping(now)

    def quiet(self, now: float) -> None:
        """After a wait that brought nothing: ping a backend silent for a while; raise
        ``BackendTimeout`` past the deadline, or past STOP_GRACE after a press."""
        ws = self.ws
        if ws is None or getattr(ws, "heard", None) is None:
            return
        if not self.reading:
            if self.pressed is None:
                return  # a lane cell: the backend is not on its path
            ws.pump()  # its pongs, read without waiting (its messages are kept)
        heard = max(ws.heard, self.since)
        if self.pressed is not None and heard < self.pressed:
            grace = min(STOP_GRACE, self.limit)
            if now - self.pressed > grace:
                raise BackendTimeout(
                    f"the backend at {self.url} did not answer for {grace:g} s after the stop button; "
                    f"the cell's wait ended (its worker may still be running it)")
        if self.reading and now - heard > self.limit:
            raise BackendTimeout(
                f"the backend at {self.url} did not answer for {self.limit:g} s "
                f"({settings.BACKEND_DEADLINE.name}); the cell's wait ended (its worker may still be running it)")
        if now - heard > self.limit / 3 and self.pinged <= heard:
            self._ping(now)

    def _ping(self, now: float) -> None:
        if self.ws is not None and hasattr(self.ws, "ping"):
            self.ws.ping()
            self.pinged = now
