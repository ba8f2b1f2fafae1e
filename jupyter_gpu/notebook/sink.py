"""A cell's events in the notebook: the sink that the driver (_client/driver.py) hands them to.

It publishes each output under the cell's parent header as it comes (a Publisher), shows the live
status while the cell waits (live.py), asks `input()` through the kernel's stdin (stdin.py), and on
the final event brings the names the cell bound back into the namespace.  What the events amount
to is gathered in a CellOutcome.
"""
from __future__ import annotations

import json

from jupyter_gpu._wire import framing, messages, sharing
from jupyter_gpu.errors import SerializationError
from jupyter_gpu.notebook import comms, stdin
from jupyter_gpu.notebook.cell_outcome import CellOutcome
from jupyter_gpu.notebook.live import LiveStatus
from jupyter_gpu.notebook.publish import Publisher
from jupyter_gpu.notebook.remote_values import RemoteValue


PHASES: dict = {}  # request id -> told each phase it enters (a map's batch: functions/progress.py)


def display_prefix(session) -> str:
    """What this kernel's remote display ids start with."""
    return f"jgpu-{session.id}-"


def namespaced(prefix: str, display_id) -> str:
    """A remote display id as the notebook knows it (one that already is: a handle that came back
    and went out again)."""
    display_id = str(display_id)
    return display_id if display_id.startswith(prefix) else prefix + display_id


def _handle_here(value, prefix: str) -> None:
    """A DisplayHandle that came back updates, from this kernel, the output its cell made."""
    if type(value).__name__ == "DisplayHandle" and isinstance(getattr(value, "display_id", None), str):
        value.display_id = namespaced(prefix, value.display_id)


class NotebookSink(Publisher):
    """One cell's events into the notebook; ``done`` returns its CellOutcome."""

    def __init__(self, session, cell: str, gpu: str, t0: float, key: str = ""):
        super().__init__(session.shell)
        self.begin()  # what the kernel itself buffered for this cell goes out before the cell's outputs
        self.session, self.cell, self.gpu, self.t0 = session, cell, gpu, t0
        self.outcome = CellOutcome()
        self.prefix = display_prefix(session)
        self.key = key  # the pool it runs in: a comm it opens lives on that pool's worker
        self.live: LiveStatus | None = None
        self.capturing = False  # an Output widget captures the cell's messages (comms.publish)
        self.first: dict | None = None  # the `done` of an attempt the worker asked to be resent with files

    def resent(self, h: dict) -> None:
        """The cell must be sent again; a worker's ``done`` of it: with the kernel's directory,
        which it cannot see (that attempt's start, cold or warm, is the cell's: ``self.first``)."""
        if h.get("type") == messages.DONE:
            held = self.session.held.get(self.key)
            self.session.files.asked(self.key, h.get("worker") or (held.worker if held is not None else None))
            self.first = h

    def waiting(self) -> LiveStatus:
        self.live = LiveStatus(self, f"{self.prefix}live-{self.cell}", self.gpu, self.t0)
        self.live.watch = PHASES.get(self.cell)
        return self.live

    def _area_cleared(self) -> None:
        """A clear_output went to the cell's own output area (none goes there while an Output
        widget captures the cell's messages): the live status line went with it."""
        if self.live is not None and not self.capturing:
            self.live.lost()

    def _after_error(self, show, *args) -> bool:
        """Once the cell's error came, its outputs wait for it (True: this one waits): what the
        worker's shell shows at post_execute (the inline backend's figures) comes after the error
        in a local cell, and here the error shows only when the magic raises (cell.conclude)."""
        held = self.outcome.after_error
        if held is None:
            return False
        held.append(lambda: show(*args))
        return True

    def clear_output(self, wait: bool) -> None:
        if self._after_error(self.clear_output, wait):
            return
        # a clear_output(wait=True) is held (outcome.clear_pending): the frontend clears at the next
        # output it gets, and under %%gpu that would be the footer (or the live status), which a
        # local cell does not have; it goes out right before the cell's next real output, or the
        # error the kernel raises (cell.conclude), or not at all
        self.outcome.clear_pending = wait
        if not wait:
            super().clear_output(False)
            self._area_cleared()

    def _cleared(self) -> None:
        if self.outcome.clear_pending:
            self.outcome.clear_pending = False
            super().clear_output(True)
            self._area_cleared()

    def stream(self, name: str, text: str) -> None:
        if self._after_error(self.stream, name, text):
            return
        self._cleared()
        super().stream(name, text)

    def output(self, h: dict, buffers: list) -> None:
        if self._after_error(self.output, h, buffers):
            return
        self._cleared()  # (the live status publishes with display(), past this)
        if "bulk" in h:  # a large display: its data and metadata came as a JSON buffer
            h = {**h, **json.loads(bytes(buffers[h["bulk"]]))}
        if h.get("kind") == "execute_result":
            self.execute_result(h["data"], h["metadata"], self.session.cell_number())
        else:
            self.display(h["data"], h["metadata"], self.local_transient(h.get("transient")), h.get("update", False))

    def local_transient(self, transient: dict | None) -> dict:
        """A remote display's transient fields here: its display id namespaced, so it never
        collides with a local one."""
        transient = dict(transient or {})
        if "display_id" in transient:
            transient["display_id"] = namespaced(self.prefix, transient["display_id"])
        return transient

    def error(self, h: dict, buffers: list) -> None:
        self.outcome.error(h, buffers)
        if self.outcome.after_error is None:
            self.outcome.after_error = []

    def iopub(self, h: dict, buffers: list) -> None:
        """A message code on the worker sent through its kernel (a widget's comm): published here."""
        comms.publish(self, h, buffers, self.key)

    def page(self, data: dict, start: int) -> None:
        """Text the cell paged: the kernel's own pager shows it (ipykernel's: the execute_reply's
        payload, which JupyterLab shows below the cell, as for a local cell)."""
        from IPython.core import page

        page.page(data, start=start)

    def ask(self, request: dict, sigint_handler, deadline: float | None) -> dict:
        return stdin.reply_to(self.shell, request, sigint_handler, deadline)

    def done(self, msg: framing.Message) -> CellOutcome:
        """The cell's final event: bring its names back."""
        out = self.outcome
        out.received += framing.payload_size(msg.header)
        self._take_results(msg.header, msg.buffers)
        out.done, out.buffers = msg.header, msg.buffers
        return out

    def _take_results(self, h: dict, buffers: list) -> None:
        session, out, prefix = self.session, self.outcome, self.prefix
        ns = session.shell.user_ns

        def stays_remote(name: str, spec: dict, why: str) -> None:
            ns[name] = value = RemoteValue(name, spec.get("t", "?"), "", "", "", spec["h"], session.cell_number(), why)
            out.refs.append(value)  # its worker and device are filled in by KernelSession.remember

        specs = h.get("values", {})
        got = sharing.unpack_values(specs, buffers, session.reader, ns)  # names that share, sharing again
        for names in sharing.changed_in_place(specs, got):
            # an input the cell changed in place stays this kernel's same object (whatever else here
            # refers to it sees the change, as locally): a value, or a group of them at once
            olds = [ns.get(n) for n in names]
            if sharing.in_place(olds, [got[n] for n in names]):
                got.update(zip(names, olds))
        for name, spec in specs.items():
            value = got[name]
            if isinstance(value, SerializationError):  # a CUDA tensor, a module not importable here
                stays_remote(name, spec, str(value))  # not a failed cell, nor the cell's other names lost
            else:
                ns[name] = value
                _handle_here(value, prefix)
            out.hashes[name] = spec["h"]
            out.received += sum(r["n"] for r in [spec["p"], *spec["b"]] if "shm" in r)
        for name, ref in h.get("refs", {}).items():  # the worker kept it (unpicklable, too large, --keep-remote)
            stays_remote(name, ref, ref.get("why", ""))
            out.hashes[name] = ref["h"]
        for name in h.get("deleted", ()):  # an input the cell deleted (`del x`): gone here too
            ns.pop(name, None)
            out.deleted.append(name)
        if h.get("missing"):
            self.stream("stderr", f"jupyter-gpu: --out names not defined on the worker: {', '.join(h['missing'])}\n")
