"""Shared fixtures for the end-to-end tests.

Everything here drives real parts: a real ipykernel (started through nbclient or jupyter_client,
kernel name ``python3``, which resolves to this interpreter's ipykernel), the embedded backend that
the ``%%gpu`` magic starts on first use, and the real worker processes that backend starts.

The kernel gets an isolated environment: ``JUPYTER_GPU_RUNTIME_DIR`` points at a pytest temp dir
(one per test session, so one backend can serve many tests) and ``JUPYTER_GPU_EMBEDDED_GRACE=2``
so the backend goes away soon after the last kernel.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest


from tests.e2e.helpers import wait_pid_exit

FOOTER_MIME = "application/vnd.jupyter-gpu.execution+json"
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# Every process the tests start (kernels, backends, workers) refuses a message field its type's
# definition lacks (jupyter_gpu/_wire/messages.py), so a definition missing a field fails a test.
os.environ["JUPYTER_GPU_STRICT_WIRE"] = "1"

# Variables a developer may have set in their shell that would send the kernel elsewhere.
_FOREIGN_VARS = ("JUPYTER_GPU_URL", "JUPYTER_GPU_TOKEN", "JUPYTER_GPU_KEEP_WARM")


def strip_ansi(text: str) -> str:
    return ANSI_RE.sub("", text)


def make_kernel_env(runtime_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_VARS}
    env["JUPYTER_GPU_RUNTIME_DIR"] = str(runtime_dir)
    env["JUPYTER_GPU_EMBEDDED_GRACE"] = "2"
    env["JUPYTER_GPU_LEDGER"] = str(runtime_dir / "ledger.sqlite3")  # never the developer's own ledger
    # The kernel must run this interpreter (the venv's), whatever PATH says.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    return env


def _reap_backend(runtime_dir: Path) -> None:
    """After the kernels are gone the embedded backend should exit on its own (grace 2 s).

    Wait for that (polling the pid, with a deadline); if it is still there, stop that one process,
    which these tests started, so nothing leaks past the test run."""
    runtime = runtime_dir / "backend.json"
    try:
        pid = int(json.loads(runtime.read_text())["pid"])
    except Exception:
        return
    if not wait_pid_exit(pid, 20):
        import warnings

        warnings.warn(f"embedded backend {pid} still running 20 s after its last kernel; stopping it")
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="session")
def gpu_runtime_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("jupyter-gpu-runtime")
    yield d
    _reap_backend(d)


@pytest.fixture(scope="session")
def kernel_env(gpu_runtime_dir) -> dict[str, str]:
    """Environment for kernels that share the session's embedded backend."""
    return make_kernel_env(gpu_runtime_dir)


@pytest.fixture
def fresh_kernel_env(tmp_path) -> dict[str, str]:
    """Environment for a kernel that must start its own, fresh, embedded backend."""
    d = tmp_path / "fresh-runtime"
    d.mkdir()
    yield make_kernel_env(d)
    _reap_backend(d)


# --------------------------------------------------------------------------------------------
# nbclient: run a list of cell sources as a notebook
# --------------------------------------------------------------------------------------------


@pytest.fixture
def run_notebook(kernel_env, tmp_path) -> Callable[..., Any]:
    """``run_notebook(sources, timeout=120, env=None, allow_errors=False)`` -> executed notebook.

    nbclient starts a real kernel, executes every cell and shuts the kernel down again (also when
    a cell fails, in which case ``CellExecutionError`` propagates; the notebook object passed in
    still holds what ran, see ``run_notebook.last``)."""
    import nbformat
    from jupyter_gpu.ci.executor import NotebookClient

    class Runner:
        last = None

        def __call__(self, sources, timeout=120, env=None, allow_errors=False):
            nb = nbformat.v4.new_notebook()
            nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
            nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
            self.last = nb
            client = NotebookClient(
                nb,
                kernel_name="python3",
                timeout=timeout,
                startup_timeout=120,
                allow_errors=allow_errors,
                resources={"metadata": {"path": str(tmp_path)}},
            )
            try:
                client.execute(env=env or kernel_env)
            finally:
                # nbclient shuts the kernel down itself when it owns it; make sure of it.
                km = getattr(client, "km", None)
                if km is not None:
                    try:
                        if km.is_alive():
                            km.shutdown_kernel(now=True)
                    except Exception:
                        pass
            return nb

    return Runner()


# --------------------------------------------------------------------------------------------
# jupyter_client: a live kernel whose iopub messages are timed on arrival
# --------------------------------------------------------------------------------------------


@dataclass
class Event:
    t: float  # time.monotonic() on arrival
    channel: str  # "iopub" | "shell" | "stdin" (input_request, for a cell submitted with allow_stdin)
    msg: dict


@dataclass
class Cell:
    msg_id: str
    code: str
    sent_at: float
    events: list = field(default_factory=list)
    reply: dict | None = None
    reply_at: float | None = None
    idle: bool = False

    @property
    def iopub(self) -> list:
        return [e for e in self.events if e.channel == "iopub"]

    def streams(self, name: str = "stdout") -> list:
        return [
            e for e in self.iopub if e.msg["msg_type"] == "stream" and e.msg["content"]["name"] == name
        ]

    def stdout(self) -> str:
        return "".join(e.msg["content"]["text"] for e in self.streams("stdout"))

    def stderr(self) -> str:
        return "".join(e.msg["content"]["text"] for e in self.streams("stderr"))

    def errors(self) -> list:
        return [e.msg["content"] for e in self.iopub if e.msg["msg_type"] == "error"]

    def input_requests(self) -> list:
        return [e.msg["content"] for e in self.events if e.channel == "stdin"]

    def footers(self) -> list:
        """Final (not live) footer JSONs published by the cell, in order."""
        out = []
        for e in self.iopub:
            if e.msg["msg_type"] != "display_data":
                continue
            data = e.msg["content"].get("data", {})
            if FOOTER_MIME in data:
                j = data[FOOTER_MIME]
                if isinstance(j, str):
                    j = json.loads(j)
                if not j.get("live"):
                    out.append(j)
        return out

    @property
    def done(self) -> bool:
        return self.reply is not None and self.idle


class LiveKernel:
    """A real kernel started with jupyter_client; messages are received as they arrive."""

    def __init__(self, env: dict[str, str]):
        import zmq
        from jupyter_client import KernelManager

        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)
        self._poller = zmq.Poller()
        self._poller.register(self.kc.iopub_channel.socket, zmq.POLLIN)
        self._poller.register(self.kc.shell_channel.socket, zmq.POLLIN)
        self._poller.register(self.kc.stdin_channel.socket, zmq.POLLIN)
        self.cells: dict[str, Cell] = {}

    @classmethod
    def beside(cls, folder, env: dict[str, str]) -> "LiveKernel":
        """A kernel working in ``folder`` (as one started beside its notebook), the extension loaded."""
        from tests.e2e.helpers import LOAD

        k = cls(env)
        k.run(f"import os\nos.chdir({str(folder)!r})")
        k.run(LOAD)
        return k

    # -- receiving ------------------------------------------------------------------------
    def _drain(self) -> None:
        for name, ch in (("iopub", self.kc.iopub_channel), ("shell", self.kc.shell_channel),
                         ("stdin", self.kc.stdin_channel)):
            while ch.msg_ready():
                msg = ch.get_msg(timeout=0)
                now = time.monotonic()
                parent = msg.get("parent_header", {}).get("msg_id")
                cell = self.cells.get(parent)
                if cell is None:
                    continue
                cell.events.append(Event(now, name, msg))
                if name == "shell" and msg["msg_type"] == "execute_reply":
                    cell.reply, cell.reply_at = msg, now
                elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    cell.idle = True

    def wait_until(self, cond: Callable[[], bool], timeout: float) -> bool:
        """Receive messages until ``cond()`` holds (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        self._drain()
        while not cond():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._poller.poll(min(left, 1.0) * 1000)  # wakes on the next message
            self._drain()
        return True

    # -- sending ----------------------------------------------------------------------------
    def submit(self, code: str, allow_stdin: bool = False) -> Cell:
        t = time.monotonic()
        msg_id = self.kc.execute(code, store_history=True, allow_stdin=allow_stdin)
        cell = Cell(msg_id=msg_id, code=code, sent_at=t)
        self.cells[msg_id] = cell
        return cell

    def run(self, code: str, timeout: float = 120, ok: bool = True) -> Cell:
        cell = self.submit(code)
        assert self.wait_until(lambda: cell.done, timeout), f"no reply within {timeout}s to {code!r}"
        if ok:
            content = cell.reply["content"]
            assert content["status"] == "ok", (
                f"{code!r} failed: {content.get('ename')}: {content.get('evalue')}\n"
                + strip_ansi("\n".join(content.get("traceback", [])))
            )
        return cell

    def comm_send(self, comm_id: str, data: dict, msg_type: str = "comm_msg") -> Cell:
        """What a frontend sends to a comm (a widget's view moved, a button pressed): a message on
        the shell channel; its Cell collects what the kernel publishes under it, until idle."""
        msg = self.kc.session.msg(msg_type, {"comm_id": comm_id, "data": data})
        cell = Cell(msg_id=msg["header"]["msg_id"], code=f"<{msg_type} {comm_id}>", sent_at=time.monotonic())
        self.cells[cell.msg_id] = cell
        self.kc.shell_channel.send(msg)
        return cell

    def answer(self, value: str) -> None:
        """Reply to the kernel's pending input_request (what a user types into the input box)."""
        self.kc.input(value)

    def interrupt(self) -> float:
        t = time.monotonic()
        self.km.interrupt_kernel()
        return t

    def shutdown(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            if self.km.is_alive():
                self.km.shutdown_kernel(now=False)


@pytest.fixture
def live_kernel(kernel_env):
    k = LiveKernel(kernel_env)
    try:
        yield k
    finally:
        k.shutdown()
