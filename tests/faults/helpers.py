"""What the fault tests share: a real `serve` backend (tests/integration/backend_process.py) and a
raw BackendClient session that runs a cell and collects its events up to the final one, within a
bound (no fault may leave a cell waiting past it)."""
from __future__ import annotations

import os
import select
import time
from dataclasses import dataclass, field

from jupyter_gpu._client.connection import BackendClient
from jupyter_gpu._wire import messages

TOKEN = "faults-token"


@dataclass
class Run:
    """One cell's events, as they came, and how long it took to end."""
    cell: str
    events: list = field(default_factory=list)
    took: float = 0.0

    @property
    def final(self) -> dict:
        return self.events[-1]

    def stdout(self) -> str:
        return "".join(e["text"] for e in self.events if e["type"] == messages.STREAM and e["name"] == "stdout")

    def errors(self) -> list[dict]:
        return [e for e in self.events if e["type"] == messages.ERROR and "ename" in e]


class Session:
    """A kernel session of the backend, driven by hand: ``start`` sends a cell, ``lines`` reads
    its output as it comes, ``finish`` reads it to its end."""

    def __init__(self, url: str, session_id: str):
        self.client = BackendClient(url, TOKEN, session_id)
        self.n = 0

    def start(self, code: str) -> Run:
        self.n += 1
        run = Run(f"c{self.n}")
        run.took = time.monotonic()
        self.client.send({"type": messages.EXECUTE, "cell": run.cell, "code": code, "gpu": "cpu",
                          "inputs": {}, "keep": {}, "binds": []})
        return run

    def until(self, run: Run, cond, bound: float) -> bool:
        """Read ``run``'s events until ``cond(run)`` holds or it ended; False when it ended first."""
        deadline = time.monotonic() + bound
        while not cond(run):
            if run.events and run.final["type"] in (messages.DONE, messages.FAILURE):
                return False
            left = deadline - time.monotonic()
            assert left > 0, f"{run.cell}: nothing for {bound} s; got {run.events[-5:]}"
            msg = self.client.recv(timeout=left)
            if msg is not None and msg.header.get("cell") == run.cell:
                run.events.append(msg.header)
        return True

    def request(self, header: dict, reply: str, bound: float = 30) -> dict:
        """Send a control request (``release``, ``status``) and return its reply's header."""
        self.client.send(header)
        deadline = time.monotonic() + bound
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {reply} for {header} within {bound} s"
            msg = self.client.recv(timeout=left)
            if msg is not None and msg.type == reply:
                return msg.header

    def finish(self, run: Run, bound: float) -> Run:
        self.until(run, lambda r: False, bound)
        run.took = time.monotonic() - run.took
        return run

    def run(self, code: str, bound: float = 60) -> Run:
        return self.finish(self.start(code), bound)

    def close(self) -> None:
        self.client.close()


def wait_gone(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` (not our child) has exited within ``timeout`` (its pidfd turns readable)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)
