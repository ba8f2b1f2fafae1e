"""``input()`` and ``getpass()`` in a `%%gpu` cell ask the notebook's user, as in a local cell.

The worker sends ``input_request {prompt, password}`` with the cell's events and waits; the kernel
asks through its own stdin channel (ipykernel's ``raw_input`` / ``getpass``, so the frontend shows
its usual input box) and sends back ``input_reply``: the value, or the error a local cell would
have got (``StdinNotImplementedError`` where the frontend takes no input, as under nbclient;
``EOFError``; ``KeyboardInterrupt`` when the stop button was pressed while it waited), which the
worker raises in the cell.
"""
from __future__ import annotations

import getpass
import signal

from IPython.core.error import StdinNotImplementedError

from . import protocol

ERRORS = {"StdinNotImplementedError": StdinNotImplementedError, "EOFError": EOFError,
          "KeyboardInterrupt": KeyboardInterrupt}


def reply_to(shell, request: dict, sigint_handler=None) -> dict:
    """Ask the user as the request says; the ``input_reply`` for the worker.

    ``sigint_handler``: the kernel's own SIGINT handler, put back while the user is asked (the
    cell's wait traps SIGINT to count stop presses; ipykernel's wait for the reply must see it)."""
    prompt, password = str(request.get("prompt", "")), bool(request.get("password"))
    kernel = getattr(shell, "kernel", None)
    if kernel is not None:
        ask = (lambda p: kernel.getpass(p)) if password else kernel.raw_input
    else:  # a plain IPython shell: the terminal
        ask = getpass.getpass if password else input
    trapped = signal.getsignal(signal.SIGINT) if sigint_handler is not None else None
    if sigint_handler is not None:
        signal.signal(signal.SIGINT, sigint_handler)
    try:
        value = ask(prompt)
    except tuple(ERRORS.values()) as e:
        return {"type": protocol.INPUT_REPLY, "error": {"ename": type(e).__name__, "evalue": str(e)}}
    finally:
        if sigint_handler is not None:
            signal.signal(signal.SIGINT, trapped)
    return {"type": protocol.INPUT_REPLY, "value": str(value)}


def raise_reply(reply: dict) -> str:
    """Worker side: the value the user typed, or the error a local cell would have raised."""
    err = reply.get("error")
    if err is None:
        return str(reply.get("value", ""))
    cls = ERRORS.get(err.get("ename"), RuntimeError)
    raise cls(err.get("evalue", "")) if err.get("evalue") else cls()
