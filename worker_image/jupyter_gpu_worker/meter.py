"""A lane cell's reports to the backend, sent by the worker's reader thread off the round trip.

The backend does not relay a lane cell (``jupyter_gpu/_wire/lane.py``), so the worker tells it: a cell
still running after STARTED_AFTER is announced (``started``: busy in its status, running in the
ledger, keep-warm paused); ended ones are metered (``metered``, dated back by ``ended_ago``) once
the worker has been idle METER_IDLE, or at once when the oldest unreported one ended METER_MAX ago
(a kernel that runs cells back to back for a long time).  The reader sleeps until a report falls
due (``LaneMeter.due`` is its select timeout); the main thread wakes it through a pipe
(``LaneMeter.wake_fd``) only when a report is owed and no timeout is set.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Callable

from jupyter_gpu._wire import messages

STARTED_AFTER, METER_IDLE, METER_MAX = 0.02, 0.02, 1.0


class LaneMeter:
    """What the worker owes the backend of its lane cells, and when it sends it.
    ``send_backend(header)`` sends one message to the backend.

    The reader thread calls ``announce_later``, ``handed_over``, ``due``, ``report``,
    ``report_now``, ``retirable`` and ``flush``, and selects on ``wake_fd``; the main thread calls
    ``owe`` (a lane cell ended) and ``request_ended`` (any request ended)."""

    def __init__(self, send_backend: Callable[[dict], None]):
        self._send_backend = send_backend
        # the main thread wakes the reader: a report is due (the reader selects on wake_fd, and
        # reads it empty when it is readable)
        self.wake_fd, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)  # a wake-up nobody reads yet must never block
        self._meters: list[dict] = []  # `metered` reports of lane cells the backend has not had yet
        self._lock = threading.Lock()  # orders `started` before its cell's `metered`
        self._announce: tuple[str, float] | None = None  # the running lane cell, and when to announce it
        self._pending = 0  # requests the reader handed over that have not ended (under _lock)
        self._idle_since = 0.0  # when the last request ended
        self._armed = False  # the reader waits with a timeout (a report falls due by itself)
        self._report_asked = False  # the backend asked for what is owed while a request ran

    def announce_later(self, cell: str) -> None:
        """Reader: a lane cell arrived; it is announced unless it ends within STARTED_AFTER."""
        with self._lock:
            self._announce = (cell, time.monotonic() + STARTED_AFTER)

    def handed_over(self) -> None:
        """Reader: a request goes to the main thread (any request, lane or not)."""
        with self._lock:
            self._pending += 1

    def due(self) -> float | None:
        """How long the reader may wait before a report falls due (None: no report due): the
        running lane cell's ``started``, or the ended ones' ``metered`` once the worker is idle."""
        with self._lock:
            dues = [self._announce[1]] if self._announce is not None else []
            if self._meters and not self._pending:
                dues.append(self._idle_since + METER_IDLE)
            self._armed = bool(dues)  # False: the main thread must wake us when a report is owed
        return max(0.0, min(dues) - time.monotonic()) if dues else None

    def report(self) -> None:
        """Reader: send the reports that are due (an early wake-up just finds none)."""
        with self._lock:
            now = time.monotonic()
            if self._announce is not None and now >= self._announce[1]:
                cell, self._announce = self._announce[0], None
                self._flush_locked()  # what ended before it first
                self._send_backend({"type": messages.STARTED, "cell": cell})
            elif self._meters and not self._pending and now >= self._idle_since + METER_IDLE:
                self._flush_locked()

    def owe(self, report: dict, ended: float) -> None:
        """Main thread: a lane cell ended; the reader reports it once the worker is idle."""
        with self._lock:
            self._announce = None
            report["_ended"] = ended
            self._meters.append(report)
            if report["_ended"] - self._meters[0]["_ended"] >= METER_MAX:
                self._flush_locked()

    def request_ended(self) -> None:
        """Main thread: a request ended.  The reader, waiting with a timeout, finds the reports
        owed when it wakes; one waiting without (it announced a long cell) is woken for them."""
        with self._lock:
            self._pending -= 1
            self._idle_since = time.monotonic()
            if self._report_asked and not self._pending:  # the backend waits for these now
                self._answer_report_locked()
            wake = bool(self._meters) and not self._armed
        if wake:
            try:
                os.write(self._wake_w, b"w")
            except BlockingIOError:
                pass  # the pipe already holds a wake-up

    def report_now(self) -> None:
        """Reader: the backend asks for what is owed (a kernel wants its status): the ended
        cells' reports and ``reported`` now, or, while a request runs, as it ends
        (``request_ended``)."""
        with self._lock:
            if self._pending:
                self._report_asked = True
            else:
                self._answer_report_locked()

    def retirable(self, ran_since: Callable[[], bool]) -> bool:
        """Reader, as keep-warm runs out (the backend's view): whether nothing stands in the way
        of retiring here.  Owed reports go now instead; ``ran_since()``, asked under the lock,
        says whether a cell ran since the backend counted them."""
        with self._lock:
            if self._meters:
                self._flush_locked()  # its `metered` re-arms keep-warm
                return False
            if ran_since() or self._pending:
                return False  # the backend re-arms keep-warm when that cell's `metered` reaches it
        return True

    def _answer_report_locked(self) -> None:
        self._report_asked = False
        self._flush_locked()
        self._send_backend({"type": messages.REPORTED})

    def flush(self) -> None:
        """Reader: send every owed report now (the worker exits)."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        now = time.monotonic()
        for report in self._meters:  # the backend dates each cell back by `ended_ago`
            report["ended_ago"] = now - report.pop("_ended")
            self._send_backend(report)
        self._meters.clear()
