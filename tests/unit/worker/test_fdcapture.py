"""The worker's fd capture: a cell's end waits until what reached fds 1 and 2 is forwarded."""
from __future__ import annotations

import os
import threading

from jupyter_gpu_worker.fdcapture import _Pump


class PumpStepsBetweenLooks(_Pump):
    """A pump whose thread (played by the test) takes its step exactly while ``drained`` looks:
    at a look at ``busy`` with bytes waiting, it marks itself busy and reads them, without
    forwarding them yet - what a pump woken by the cell's last ``os.write`` does under load."""

    def __init__(self):  # no real thread and no descriptor taken over
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self._busy = False
        self.done = threading.Condition()

    @property
    def busy(self) -> bool:
        was = self._busy
        try:
            if os.read(self.read_fd, 1 << 16):
                self._busy = True  # read, not yet forwarded
        except BlockingIOError:
            pass  # nothing waits: the pump sleeps in select
        return was

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


def test_bytes_the_pump_has_read_but_not_forwarded_are_not_drained():
    pump = PumpStepsBetweenLooks()
    try:
        os.write(pump.write_fd, b"raw fd 1\n")
        assert not pump.drained()  # waiting in the pipe, or read and not forwarded: not there yet
        assert not pump.drained()  # (the pump has read them by now, and still forwards them)
    finally:
        pump.close()


def test_an_empty_pipe_and_an_idle_pump_are_drained():
    pump = PumpStepsBetweenLooks()
    try:
        assert pump.drained()
        os.write(pump.write_fd, b"x")
        assert not pump.drained()
    finally:
        pump.close()
