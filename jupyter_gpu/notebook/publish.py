"""Publish a remote cell's outputs on the kernel's iopub, from the cell's own thread, under the
cell's parent header - so nbclient and JupyterLab attach every output to the right cell.

Under ipykernel every message goes straight to the iopub socket.  ipykernel's own display
publisher would first flush stdout and stderr, and each flush is a round trip to the IOPub thread
even when there is nothing to flush (four per cell, ~0.1-0.3 ms each on a busy 2-core machine);
all our messages share one socket queue, so their order is kept without it.
"""
from __future__ import annotations

import collections
import re
import sys
import threading
import warnings

_EXIT_WARNING = "To exit: use 'exit', 'quit', or Ctrl-D."  # IPython's, after a SystemExit


class Publisher:
    def __init__(self, shell):
        self.shell = shell
        dp = shell.display_pub
        self.zmq = all(hasattr(dp, a) for a in ("session", "pub_socket", "parent_header"))

    def begin(self) -> None:
        """Make anything the kernel itself buffered for this cell go out before our messages."""
        for stream in (sys.stdout, sys.stderr):
            if getattr(stream, "_flush_pending", True):
                stream.flush()

    def _send(self, msg_type: str, content: dict, ident: bytes, socket=None) -> None:
        dp = self.shell.display_pub
        dp.session.send(socket or dp.pub_socket, msg_type, content, parent=dp.parent_header, ident=ident)

    def stream(self, name: str, text: str) -> None:
        if self.zmq:
            self._send("stream", {"name": name, "text": text}, b"stream." + name.encode())
        else:
            out = sys.stderr if name == "stderr" else sys.stdout
            out.write(text)
            out.flush()

    def display(self, data: dict, metadata: dict, transient: dict | None = None, update: bool = False) -> None:
        if self.zmq:
            content = {"data": data, "metadata": metadata, "transient": transient or {}}
            self._send("update_display_data" if update else "display_data", content, b"display_data")
        else:
            self.shell.display_pub.publish(data, metadata, transient=transient or {}, update=update)

    def footer(self, data: dict) -> None:
        """The cell's last output.  Queued on ipykernel's IOPub thread without waking it: as the
        cell ends the kernel wakes it anyway (its stdout flush, then `status: idle`), and the
        footer, queued first, goes out first, before the reply.  Waking the thread here made it
        take the GIL from the cell's thread in the middle of its last steps (~0.1 ms a warm cell,
        paired in one kernel on this 2-core VM).  Anything else, and a `%%gpu` magic called from
        inside a longer cell, publishes as usual."""
        queue = _queue_of(self.shell) if self.zmq else None
        if queue is None:
            return self.display(data, {})
        self._send("display_data", {"data": data, "metadata": {}, "transient": {}}, b"display_data", queue)

    def footer_after_cell(self, data: dict, quiet_exit: bool = False, first=None) -> None:
        """The footer of a cell that raises: the kernel publishes the error output after the magic
        raises, and the footer must still be the cell's last output, so it goes out once the cell
        has finished (post_run_cell).  quiet_exit: the cell raised SystemExit, whose warning IPython
        prints after it ("To exit: use 'exit', ..."); the worker's came with the cell's output, the
        kernel's would be a second.  first: called before the footer goes (what the cell showed after
        its error)."""
        events = self.shell.events
        if quiet_exit:
            warnings.filterwarnings("ignore", message=re.escape(_EXIT_WARNING), category=UserWarning)
            quieted = warnings.filters[0]

        def publish(result=None):
            events.unregister("post_run_cell", publish)
            if quiet_exit and quieted in warnings.filters:
                warnings.filters.remove(quieted)
            self.begin()  # what the kernel wrote while showing the error goes before the footer
            if first is not None:
                first()
            self.display(data, {})

        events.register("post_run_cell", publish)

    def raw(self, msg_type: str, content: dict, ident: bytes, metadata: dict | None = None, buffers=None) -> None:
        """Any iopub message (a comm's, comms.py), under the cell's parent; outside a kernel
        only a display shows."""
        if self.zmq:
            dp = self.shell.display_pub
            dp.session.send(dp.pub_socket, msg_type, content, parent=dp.parent_header, ident=ident,
                            buffers=buffers or None, metadata=metadata or {})
        elif msg_type == "display_data":
            self.shell.display_pub.publish(content.get("data", {}), content.get("metadata", {}))

    def clear_output(self, wait: bool) -> None:
        if self.zmq:
            self._send("clear_output", {"wait": bool(wait)}, b"clear_output")
        else:
            self.shell.display_pub.clear_output(wait)

    def execute_result(self, data: dict, metadata: dict, execution_count: int) -> None:
        if self.zmq:
            content = {"data": data, "metadata": metadata, "execution_count": execution_count}
            self._send("execute_result", content, b"execute_result")
        else:
            self.display(data, metadata)


class _Queued:
    """A socket stand-in for Session.send: the message is queued on the IOPub thread, unsent."""

    def __init__(self, thread):
        self.thread = thread

    def send_multipart(self, parts, *args, **kwargs):
        thread = self.thread
        thread._events.append(lambda: thread._really_send(parts, *args, **kwargs))


def _queue_of(shell):
    """A _Queued for this kernel's IOPub thread, when the cell running is a whole `%%gpu` cell on
    the kernel's main thread (so the kernel ends the request, and wakes the thread, right after)."""
    thread = getattr(getattr(shell.display_pub, "pub_socket", None), "io_thread", None)
    internals = isinstance(getattr(thread, "_events", None), collections.deque) and callable(
        getattr(thread, "_really_send", None))  # ipykernel's, as of 6 and 7: else publish as usual
    if not internals or not getattr(getattr(thread, "thread", None), "is_alive", lambda: False)():
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    parent = getattr(getattr(shell, "kernel", None), "get_parent", lambda: None)() or {}
    code = (parent.get("content") or {}).get("code", "")
    if parent.get("header", {}).get("msg_type") != "execute_request" or not code.lstrip().startswith("%%gpu"):
        return None
    return _Queued(thread)
