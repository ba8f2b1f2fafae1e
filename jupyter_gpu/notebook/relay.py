"""Relay a remote cell's events into the notebook as they come, until its final one.

The cell's own thread does it: it blocks on the connection (the backend's, or the worker's lane)
and publishes each event under the cell's parent header.  A stop-button press (SIGINT) while it
waits becomes an interrupt request; a second one asks the backend to kill the worker.  The cell
keeps draining events either way, so no output is lost.
"""
from __future__ import annotations

import json
import signal
import threading
import time

from jupyter_gpu._wire import framing, messages, serialization
from jupyter_gpu.notebook import stdin
from jupyter_gpu.cost.limit import CellBudget
from jupyter_gpu.errors import SerializationError, from_failure
from jupyter_gpu.notebook.live import LiveStatus
from jupyter_gpu.notebook.outcome import CellOutcome
from jupyter_gpu.notebook.publish import Publisher
from jupyter_gpu.notebook.remote import RemoteValue
from jupyter_gpu.notebook.options import CellOptions

POLL = 0.05  # how often the waiting thread looks at the interrupt flag


class StopButton:
    """Stop-button presses while a cell waits: SIGINT becomes a count (only on the main thread,
    the only one Python delivers signals to)."""

    def __init__(self):
        self.presses = 0

    def trap(self):
        """Count SIGINT from now on; returns the handler it replaced (None off the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            return None

        def on_sigint(signum, frame):
            self.presses += 1

        previous = signal.signal(signal.SIGINT, on_sigint)
        return previous if previous is not None else signal.default_int_handler  # None: not set from Python


def drain(session, cell: str, gpu: str, t0: float, opts: CellOptions, conn) -> CellOutcome | None:
    """Publish the cell's events (read from ``conn``: the backend or the worker's lane) until
    its final one.  None means: resend the inputs."""
    pub = Publisher(session.shell)
    pub.begin()
    budget = CellBudget.for_cell(opts.max_cost, gpu, t0)
    if budget is not None and budget.note():
        pub.stream("stderr", budget.note())
    out = CellOutcome()
    # a short cell sent as its request arrived has often ended by now: when its final event is
    # all there already, it is taken at once, without the stop-button trap and the live status
    # that only waiting needs (a larger one is read in the loop, where a stop press is counted)
    msg = conn.recv_ready()
    if (msg is not None and msg.type == messages.DONE and msg.header.get("cell") == cell
            and msg.header.get("status") != "resend"):
        return _ended(session, msg, out, pub)
    prefix = display_prefix(session)
    live = LiveStatus(pub, f"{prefix}live-{cell}", gpu, t0)
    stop = StopButton()
    kernel_sigint = stop.trap()  # the kernel's own handler, None off the main thread
    sent_interrupts = 0
    try:
        while True:
            now = time.monotonic()
            if opts.timeout and now - t0 > opts.timeout and stop.presses == 0:
                stop.presses = 1  # --timeout: the same path as the stop button
            over = budget.exceeded(now) if budget is not None and stop.presses == 0 else None
            if over:
                pub.stream("stderr", over)
                stop.presses = 1  # --max-cost: the same path as the stop button
            elif budget is not None and budget.again(now):  # one sent during a cold start is dropped
                conn.send({"type": messages.INTERRUPT, "cell": cell})
            wait = max(0.0, live.next_tick - now)
            if kernel_sigint is not None:
                wait = min(wait, POLL)
            if msg is None:  # else: the event that was there before waiting began
                try:
                    msg = conn.recv(timeout=wait)
                except KeyboardInterrupt:  # only off the main thread, where SIGINT cannot be trapped
                    stop.presses += 1
            if stop.presses > sent_interrupts:
                sent_interrupts = stop.presses
                if sent_interrupts == 1:
                    conn.send({"type": messages.INTERRUPT, "cell": cell})
                else:  # only the backend can kill a worker
                    session.client.send({"type": messages.KILL, "cell": cell, "gpu": gpu, "image": opts.image})
            live.tick()
            if msg is None:
                continue
            h, buffers, msg = msg.header, msg.buffers, None
            if h.get("cell") not in (cell, None):
                continue  # a late event of an earlier attempt
            kind = h["type"]
            if kind == messages.STREAM:
                pub.stream(h["name"], h["text"])
            elif kind == messages.DISPLAY:
                if "bulk" in h:  # a large display: its data and metadata came as a JSON buffer
                    h = {**h, **json.loads(bytes(buffers[h["bulk"]]))}
                if h.get("kind") == "execute_result":
                    pub.execute_result(h["data"], h["metadata"], session.cell_number())
                else:
                    transient = dict(h.get("transient") or {})
                    if "display_id" in transient:  # namespaced: never collides with local ids
                        transient["display_id"] = namespaced(prefix, transient["display_id"])
                    pub.display(h["data"], h["metadata"], transient, h.get("update", False))
            elif kind == messages.CLEAR_OUTPUT:
                pub.clear_output(h.get("wait", False))
            elif kind == messages.INPUT_REQUEST:
                # a limit already passed withdraws the question at once (a stop press does not:
                # code that caught its KeyboardInterrupt may ask, as a local cell would)
                limits = [budget.deadline()] if budget is not None else []
                if opts.timeout:
                    limits.append(t0 + opts.timeout)
                deadline = min((d for d in limits if d is not None), default=None)
                conn.send({**stdin.reply_to(session.shell, h, kernel_sigint, deadline), "cell": cell})
            elif kind == messages.ERROR:
                out.error(h, buffers)
            elif kind == messages.PHASE:
                live.show(h["phase"], h.get("position"), h.get("detail"))
                if budget is not None:
                    budget.phase(h["phase"], time.monotonic())
            elif kind == messages.RESEND:
                return None
            elif kind == messages.FAILURE:
                live.clear()
                raise from_failure(h)
            elif kind == messages.DONE and h.get("status") != "resend":
                live.clear()
                return _ended(session, framing.Message(h, buffers), out, pub)
    finally:
        if kernel_sigint is not None:
            signal.signal(signal.SIGINT, kernel_sigint)


def _ended(session, msg, out: CellOutcome, pub: Publisher) -> CellOutcome:
    """The cell's final event: bring its names back."""
    out.received += framing.payload_size(msg.header)
    take_results(session, msg.header, msg.buffers, out, pub)
    out.done = msg.header
    return out


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


def take_results(session, h: dict, buffers: list, out: CellOutcome, pub: Publisher) -> None:
    ns = session.shell.user_ns
    prefix = display_prefix(session)
    def stays_remote(name: str, spec: dict, why: str) -> None:
        ns[name] = value = RemoteValue(name, spec.get("t", "?"), "", "", "", spec["h"], session.cell_number(), why)
        out.refs.append(value)  # its worker and device are filled in by _remember

    for name, spec in h.get("values", {}).items():
        try:
            ns[name] = serialization.unpack(name, spec, buffers, session.reader)
            _handle_here(ns[name], prefix)
        except SerializationError as e:  # e.g. a CUDA tensor, and this kernel has no CUDA
            stays_remote(name, spec, str(e))  # not a failed cell, nor the cell's other names lost
        out.hashes[name] = spec["h"]
        out.received += sum(r["n"] for r in [spec["p"], *spec["b"]] if "shm" in r)
    for name, ref in h.get("refs", {}).items():  # the worker kept it (unpicklable, too large, --keep-remote)
        stays_remote(name, ref, ref.get("why", ""))
        out.hashes[name] = ref["h"]
    for name in h.get("deleted", ()):  # an input the cell deleted (`del x`): gone here too
        ns.pop(name, None)
        out.deleted.append(name)
    if h.get("missing"):
        pub.stream("stderr", f"jupyter-gpu: --out names not defined on the worker: {', '.join(h['missing'])}\n")
