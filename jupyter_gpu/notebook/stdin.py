"""``input()`` and ``getpass()`` in a `%%gpu` cell ask the notebook's user, as in a local cell.

The worker sends ``input_request {prompt, password}`` with the cell's events and waits; the kernel
asks through its own stdin channel (ipykernel's ``raw_input`` / ``getpass``, so the frontend shows
its usual input box) and sends back ``input_reply``: the value, or the error a local cell would
have got (``StdinNotImplementedError`` where the frontend takes no input, as under nbclient;
``EOFError``; ``KeyboardInterrupt`` when the stop button was pressed while it waited), which the
worker raises in the cell.
"""
from __future__ import annotations

import _thread
import getpass
import signal
import threading
import time

from IPython.core.error import StdinNotImplementedError

from jupyter_gpu._wire import messages

ERRORS = {"StdinNotImplementedError": StdinNotImplementedError, "EOFError": EOFError,
          "KeyboardInterrupt": KeyboardInterrupt}
ASK_AT_LEAST = 0.5  # seconds before a cell's limit runs out: with less, the question is not asked


def reply_to(shell, request: dict, sigint_handler=None, deadline: float | None = None) -> dict:
    """Ask the user as the request says; the ``input_reply`` for the worker.

    ``sigint_handler``: the kernel's own SIGINT handler, put back while the user is asked (the
    cell's wait traps SIGINT to count stop presses; ipykernel's wait for the reply must see it).
    ``deadline`` (time.monotonic()): when the cell's --timeout or --max-cost runs out; the question
    is then withdrawn as the stop button would (the cell is billed while it waits)."""
    prompt, password = str(request.get("prompt", "")), bool(request.get("password"))
    if deadline is not None and deadline - time.monotonic() < ASK_AT_LEAST:
        # the press must find ipykernel waiting for the answer: one that lands while it still
        # sets the question up leaves its sockets broken
        return {"type": messages.INPUT_REPLY, "error": {
            "ename": "KeyboardInterrupt", "evalue": "not asked: the cell's --timeout or --max-cost ran out"}}
    kernel = getattr(shell, "kernel", None)
    if kernel is not None:
        ask = (lambda p: kernel.getpass(p)) if password else kernel.raw_input
    else:  # a plain IPython shell: the terminal
        ask = getpass.getpass if password else input
    trapped = signal.getsignal(signal.SIGINT) if sigint_handler is not None else None
    if sigint_handler is not None:
        signal.signal(signal.SIGINT, sigint_handler)
    # the limit can only press the stop button where SIGINT lands: the main thread, asking
    limit = _Limit(deadline) if deadline is not None and sigint_handler is not None else None
    try:
        try:
            value = ask(prompt)
        finally:
            if limit is not None:
                limit.stop()  # a press it made before this raises here, inside the try
    except tuple(ERRORS.values()) as e:
        return {"type": messages.INPUT_REPLY, "error": {"ename": type(e).__name__, "evalue": str(e)}}
    finally:
        if sigint_handler is not None:
            signal.signal(signal.SIGINT, trapped)
    return {"type": messages.INPUT_REPLY, "value": str(value)}


class _Limit:
    """Presses the stop button (SIGINT to the main thread) at ``deadline`` unless stopped first."""

    def __init__(self, deadline: float):
        self._lock = threading.Lock()
        self._asking, self.pressed = True, False
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._press)
        self._timer.daemon = True
        self._timer.start()

    def _press(self) -> None:
        with self._lock:
            if self._asking:
                self.pressed = True
                _thread.interrupt_main()

    def stop(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._asking = False
        if self.pressed:
            _handle_pending_signals()


def _handle_pending_signals() -> None:
    """Python runs a pending signal's handler as a Python function begins: this one."""
