"""Output written to the worker's file descriptors 1 and 2 - a subprocess (``subprocess.run(["nvidia-smi"])``),
a C library's own logging, ``os.write(1, ...)`` - becomes the running cell's stdout/stderr, as
ipykernel does for a local cell.  Python-level ``print`` goes through ``sys.stdout`` (shell.py) and
never reaches these descriptors.

Each descriptor becomes the write end of a pipe; a pump thread per pipe forwards what arrives to
the cell (or, between cells, to the worker's own log: the descriptor it had before).  At a cell's
end ``drain()`` waits until the pumps have forwarded everything written so far, so no line goes
out after the cell's ``done``; when nothing was written it costs one ioctl.
"""
from __future__ import annotations

import array
import fcntl
import os
import select
import termios
import threading
import time

DRAIN_TIMEOUT = 1.0  # a subprocess left writing after its cell must not hold the cell's end forever


class _Pump:
    def __init__(self, fd: int, name: str, forward):
        self.name = name
        self.log_fd = os.dup(fd)  # the worker's log, for output between cells
        self.read_fd, write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.dup2(write_fd, fd)
        os.close(write_fd)
        self._forward = forward
        self.busy = False  # set between `select` saying data waits and that data having gone on
        self.done = threading.Condition()
        threading.Thread(target=self._run, name=f"fd{fd}-pump", daemon=True).start()

    def pending(self) -> int:
        """Bytes written to the descriptor that the pump has not read yet."""
        n = array.array("i", [0])
        fcntl.ioctl(self.read_fd, termios.FIONREAD, n)
        return n[0]

    def _run(self) -> None:
        while True:
            select.select([self.read_fd], [], [])
            self.busy = True  # before the read: `pending()` or `busy` always shows unforwarded bytes
            try:
                data = os.read(self.read_fd, 1 << 16)
            except BlockingIOError:
                data = b""
            if data:
                self._forward(self.name, data, self.log_fd)
            with self.done:
                self.busy = False
                self.done.notify_all()

    def drained(self) -> bool:
        # the pipe first: the pump marks itself busy before it reads, so an empty pipe seen here
        # and then `busy` false means forwarded.  Looking at `busy` first could miss bytes the pump
        # took in between (it read them, not yet forwarded): they went to the log after the cell.
        return self.pending() == 0 and not self.busy


class FdCapture:
    """Send what is written to fds 1 and 2 to ``emitter`` while a cell runs."""

    def __init__(self, emitter):
        self.emitter = emitter
        self.pumps = [_Pump(1, "stdout", self._forward), _Pump(2, "stderr", self._forward)]

    def _forward(self, name: str, data: bytes, log_fd: int) -> None:
        if self.emitter.cell is None:
            os.write(log_fd, data)  # between cells: the worker's log keeps it
            return
        # a multi-byte character split across two reads shows as U+FFFD, as ipykernel's would
        self.emitter.write_stream(name, data.decode("utf-8", errors="replace"))

    def drain(self) -> None:
        """Wait (bounded) until everything written to fds 1 and 2 so far has reached the cell."""
        deadline = time.monotonic() + DRAIN_TIMEOUT
        for pump in self.pumps:
            if pump.drained():  # the common case: nothing written, one ioctl
                continue
            with pump.done:
                while not pump.drained():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    pump.done.wait(min(left, 0.05))  # `pending` grows without a notify: look again
