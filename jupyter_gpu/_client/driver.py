"""Drive one request's events from its connection to a sink, until its final event.

What a `%%gpu` cell and a function call share once their request is sent: the thread that sent it
blocks reading the request's events (from the backend, or from the worker's lane) and hands each
to a sink, which makes them what they are where it runs (the notebook's: notebook/sink.py).  While
it waits, a stop-button press (SIGINT) becomes an interrupt request and a second one asks the
backend to kill the worker; ``--timeout`` and ``--max-cost`` (cost/limit.py) press it as the stop
button would.  Events keep being read either way, so no output is lost.  A backend that answers
nothing, not even a ping, ends the wait with ``BackendTimeout`` (watch.py): past its deadline, or
a few seconds after a stop press.

The sink (one method call per event):
  stream(name, text)          a stream's text; also the driver's own notes, on "stderr"
  output(header, buffers)     a display event (a display, or the last expression's value)
  clear_output(wait)
  error(header, buffers)      the request's exception
  iopub(header, buffers)      a message code on the worker sent through its kernel (a comm's)
  page(data, start)           text the request paged (``obj?``, ``%magic``): a mime bundle, its first line
  ask(header, sigint_handler, deadline) -> dict
                              an input_request answered: the input_reply (``sigint_handler``: the
                              thread's own, to put back while asking; ``deadline``: when the
                              request's --timeout or --max-cost runs out, time.monotonic(), or None)
  waiting() -> status         called once, when the request has not ended already; the status it
                              shows while waiting: ``next_tick`` (when it wants ``tick()`` called),
                              ``tick()``, ``show(phase, position, detail)`` and ``clear()``
  resent(header)              the request must be sent again: the backend's ``resend``, or the
                              ``done`` of a worker's (which asked for the kernel's directory)
  done(message)               the final event; what it returns, ``drive`` returns
"""
from __future__ import annotations

import signal
import threading
import time

from jupyter_gpu._client.watch import BackendWatch
from jupyter_gpu._wire import framing, messages
from jupyter_gpu.cost.limit import CellBudget
from jupyter_gpu.errors import BackendTimeout, from_failure

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


def drive(sink, conn, cell: str, *, backend, gpu: str, image: str | None, t0: float,
          timeout: float | None = None, max_cost: float | None = None):
    """Hand request ``cell``'s events, read from ``conn`` (the backend or the worker's lane), to
    ``sink`` until its final one, and return what ``sink.done`` makes of it; None means: send its
    inputs again.  ``backend`` is the connection a kill goes to (only the backend can kill a
    worker); ``t0`` (time.monotonic()) is when the request began, which --timeout counts from."""
    events = drive_items(sink, conn, cell, backend=backend, gpu=gpu, image=image, t0=t0, timeout=timeout,
                         max_cost=max_cost)
    try:
        while True:
            next(events)  # (a request of code yields no items)
    except StopIteration as end:
        return end.value


def drive_items(sink, conn, cell: str, *, backend, gpu: str, image: str | None, t0: float,
                timeout: float | None = None, max_cost: float | None = None):
    """``drive`` as a generator: it yields each ``item`` event (header, buffers: a generator
    function's value, ``f.remote_gen``) as it comes, and returns what ``drive`` returns.  While
    the consumer holds an item, the stop button is the kernel's own again (it interrupts the
    consumer's code); a press while the driver waits interrupts the request."""
    budget = CellBudget.for_cell(max_cost, gpu, t0)
    if budget is not None and budget.note():
        sink.stream("stderr", budget.note())
    # a short cell sent as its request arrived has often ended by now: when its final event is
    # all there already, it is taken at once, without the stop-button trap and the live status
    # that only waiting needs (a larger one is read in the loop, where a stop press is counted)
    msg = conn.recv_ready()
    if (msg is not None and msg.type == messages.DONE and msg.header.get("cell") == cell
            and msg.header.get("status") != "resend"):
        return sink.done(msg)
    live = sink.waiting()
    watch = BackendWatch(conn, backend, time.monotonic())
    stop = StopButton()
    kernel_sigint = stop.trap()  # the kernel's own handler, None off the main thread
    sent_interrupts = 0
    with_files = False  # the worker asked for the cell again with the kernel's directory
    try:
        while True:
            now = time.monotonic()
            if timeout and now - t0 > timeout and stop.presses == 0:
                stop.presses = 1  # --timeout: the same path as the stop button
            over = budget.exceeded(now) if budget is not None and stop.presses == 0 else None
            if over:
                sink.stream("stderr", over)
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
                    backend.send({"type": messages.KILL, "cell": cell, "gpu": gpu, "image": image})
                watch.press(time.monotonic())
            live.tick()
            if msg is None:
                try:
                    watch.quiet(time.monotonic())  # (only after a wait that brought nothing)
                except BackendTimeout:
                    live.clear()
                    backend.abort()  # the next cell connects again
                    raise
                continue
            h, buffers, msg = msg.header, msg.buffers, None
            if h.get("cell") not in (cell, None):
                continue  # a late event of an earlier attempt
            kind = h["type"]
            if kind == messages.STREAM:
                sink.stream(h["name"], h["text"])
            elif kind == messages.DISPLAY:
                sink.output(h, buffers)
            elif kind == messages.CLEAR_OUTPUT:
                sink.clear_output(h.get("wait", False))
            elif kind == messages.INPUT_REQUEST:
                # a limit already passed withdraws the question at once (a stop press does not:
                # code that caught its KeyboardInterrupt may ask, as a local cell would)
                limits = [budget.deadline()] if budget is not None else []
                if timeout:
                    limits.append(t0 + timeout)
                deadline = min((d for d in limits if d is not None), default=None)
                conn.send({**sink.ask(h, kernel_sigint, deadline), "cell": cell})
            elif kind == messages.ERROR:
                sink.error(h, buffers)
            elif kind == messages.IOPUB:
                sink.iopub(h, buffers)
            elif kind == messages.PAYLOAD:
                sink.page(h.get("data") or {}, h.get("start", 0))
            elif kind == messages.PHASE:
                live.show(h["phase"], h.get("position"), h.get("detail"))
                if budget is not None:
                    budget.phase(h["phase"], time.monotonic())
            elif kind == messages.ITEM:
                if kernel_sigint is not None:
                    signal.signal(signal.SIGINT, kernel_sigint)
                yield h, buffers
                kernel_sigint = stop.trap()
            elif kind == messages.RESEND:
                if not h.get("files"):
                    sink.resent(h)
                    return None
                with_files = True  # its `done` follows: it says where that attempt ran, cold or not
            elif kind == messages.DONE and h.get("status") == "resend" and with_files:
                sink.resent(h)
                return None
            elif kind == messages.FAILURE:
                live.clear()
                raise from_failure(h)
            elif kind == messages.DONE and h.get("status") != "resend":
                live.clear()
                return sink.done(framing.Message(h, buffers))
    finally:
        if kernel_sigint is not None:
            signal.signal(signal.SIGINT, kernel_sigint)
