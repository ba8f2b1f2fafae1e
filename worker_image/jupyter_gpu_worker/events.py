"""What a cell shows becomes events for the kernel that sent it, in the order the cell showed it.

stdout/stderr are line-buffered into an EventStream that a flusher thread sends (coalescing under
load, never dropping); the display publisher and the display hook emit events directly, as does
the shell's traceback printer (shell.py).  Every event goes through one ``Emitter`` that keeps them
in order.
"""
from __future__ import annotations

import base64
import datetime
import io
import json
import math
import numbers
import threading

from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher

from jupyter_gpu._wire import framing, messages, schema

STREAM_LATENCY = 0.05  # a partial line (no newline yet) is sent after at most this long
# text printed while no cell runs (by a thread an earlier cell started) waits for the next cell, as
# it shows in the running cell under ipykernel; beyond this many characters the oldest is dropped
BETWEEN_CELLS_MAX = 1 << 20
# a header may be 16 MiB (framing.MAX_HEADER): stream text goes in messages of at most this many
# characters (12 bytes each at worst, escaped), and a display larger than this goes as a buffer
TEXT_PIECE = 1 << 20


class Emitter:
    """Orders and sends a cell's events.  ``send(header, buffers)`` is the connection's sender."""

    def __init__(self, send):
        self._send = send
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self._pending: list[tuple[str, str]] = []
        self._urgent = False
        self._closed = False
        self._cell: str | None = None
        self._between = 0  # characters waiting for the next cell
        self._dropped = 0  # characters printed between cells that did not fit
        threading.Thread(target=self._flusher, name="stream-flusher", daemon=True).start()

    @property
    def cell(self) -> str | None:
        """The running cell's id; None between cells."""
        return self._cell

    @cell.setter
    def cell(self, cell: str | None) -> None:
        with self._cond:
            self._cell = cell
            if cell is not None and self._pending:  # printed between cells: the new cell shows it first
                self._urgent = True
                self._cond.notify()

    # -- streams ---------------------------------------------------------------------------
    def write_stream(self, name: str, text: str) -> None:
        with self._cond:
            self._pending.append((name, text))
            if self._cell is None:
                self._keep_between_locked(len(text))
            if "\n" in text or "\r" in text:
                self._urgent = True
                self._cond.notify()
            elif len(self._pending) == 1:
                self._cond.notify()  # start the partial-line timer

    def _keep_between_locked(self, added: int) -> None:
        self._between += added
        while self._between > BETWEEN_CELLS_MAX and len(self._pending) > 1:
            name, text = self._pending.pop(0)
            self._between -= len(text)
            self._dropped += len(text)

    def _flusher(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: (self._pending and self._cell is not None) or self._closed)
                if self._closed:
                    return
                if not self._urgent:
                    self._cond.wait_for(lambda: self._urgent or self._closed, timeout=STREAM_LATENCY)
            self.flush()

    def flush(self) -> None:
        """Send buffered stream text now (callers hold no lock)."""
        with self._send_lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        with self._cond:
            if self._cell is None:
                return  # kept for the next cell
            cell, pending, self._pending, self._urgent = self._cell, self._pending, [], False
            dropped, self._dropped, self._between = self._dropped, 0, 0
        if dropped:
            pending.insert(0, ("stderr", f"[jupyter-gpu: {dropped} characters printed between cells did not fit "
                                         f"in the {BETWEEN_CELLS_MAX} kept for the next cell]\n"))
        if not pending:
            return
        merged: list[tuple[str, list[str]]] = []
        for name, text in pending:
            if merged and merged[-1][0] == name:
                merged[-1][1].append(text)
            else:
                merged.append((name, [text]))
        for name, parts in merged:
            text = "".join(parts)
            for i in range(0, len(text), TEXT_PIECE):
                self._send({"type": messages.STREAM, "cell": cell, "name": name, "text": text[i:i + TEXT_PIECE]}, ())

    # -- everything else ---------------------------------------------------------------------
    def event(self, header: dict, buffers=()) -> None:
        """Send an event after any stream text written before it."""
        with self._send_lock:
            self._event_locked(header, buffers)

    def end(self, header: dict, buffers=()) -> None:
        """Send the cell's final event; text printed after it (by a thread the cell started)
        waits for the next cell."""
        with self._send_lock:
            self._event_locked(header, buffers)
            with self._cond:
                self._cell = None

    def _event_locked(self, header: dict, buffers) -> None:
        self._flush_locked()
        if self._cell is not None:
            header.setdefault("cell", self._cell)
            try:
                self._send(header, buffers)
            except framing.HeaderTooLarge as e:  # said in the cell; the connection is intact
                self._send({"type": messages.STREAM, "cell": header["cell"], "name": "stderr",
                            "text": f"[jupyter-gpu: an output was not shown: {e}]\n"}, ())
                if header.get("type") == messages.DONE:  # the kernel waits for it: the end, without results
                    self._send(messages.done(header["cell"], "error", header.get("timings")), ())

    def display(self, fields: dict, data, metadata) -> None:
        """A display event; a large one carries its data and metadata as a JSON buffer, since a
        header may hold 16 MiB and a local cell has no such limit."""
        data, metadata = jsonable(data), jsonable(metadata)
        if _text_size(data) + _text_size(metadata) <= TEXT_PIECE:
            self.event({**fields, "data": data, "metadata": metadata})
        else:
            body = json.dumps({"data": data, "metadata": metadata}, separators=(",", ":")).encode()
            self.event({**fields, "bulk": 0}, [body])

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class EventStream(io.TextIOBase):
    """sys.stdout / sys.stderr replacement."""

    def __init__(self, emitter: Emitter, name: str):
        self._emitter = emitter
        self.name = name

    def writable(self) -> bool:
        return True

    def write(self, s) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if s:
            self._emitter.write_stream(self.name, s)
        return len(s)

    def flush(self) -> None:
        self._emitter.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        # the descriptor itself: what reaches it becomes the cell's output too (fdcapture.py), so
        # `subprocess.run(cmd, stdout=sys.stdout)` and `faulthandler.enable()` work as in a kernel
        return 2 if self.name == "stderr" else 1

    @property
    def encoding(self):
        return "utf-8"


def clip(text: str, most: int = TEXT_PIECE // 4) -> str:
    """An error's text as a message can carry it: a 30 MB message is shown by its start."""
    if len(text) <= most:
        return text
    return f"{text[:most]}… [{len(text) - most} more characters not shown]"


# a display's data nested deeper than a header may (schema.MAX_DEPTH, less the display's own
# levels) goes as its JSON buffer: the backend refuses such a header (a local cell shows it)
_DEEP = schema.MAX_DEPTH - 8


def _text_size(obj, depth: int = 0) -> int:
    """About how many characters ``obj`` (jsonable) takes as JSON: its strings' length, counted
    deep only where a value is not a string (a JSON mime type's data); past ``_DEEP`` levels,
    more than a header carries."""
    if isinstance(obj, str):
        return len(obj)
    if depth > _DEEP:
        return TEXT_PIECE + 1
    if isinstance(obj, dict):
        return sum(len(k) + _text_size(v, depth + 1) for k, v in obj.items())
    if isinstance(obj, list):
        return sum(_text_size(v, depth + 1) for v in obj)
    return 8


def jsonable(obj):
    """A display's data or metadata as Jupyter's message packer sends it: bytes as base64 text
    (the PNG of a PIL image or of sympy's printing), tuples and sets as lists, numpy numbers as
    numbers, dates as ISO text, and NaN or infinity as their repr."""
    if isinstance(obj, str) or obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return base64.b64encode(obj).decode("ascii")
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj) if math.isfinite(obj) else repr(float(obj))
    if isinstance(obj, (datetime.date, datetime.time)):
        return obj.isoformat()
    return obj  # the protocol names a type it cannot send


class EventDisplayPublisher(DisplayPublisher):
    emitter: Emitter = None

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kw):
        fields = {"type": messages.DISPLAY, "transient": jsonable(transient or {}), "update": bool(update)}
        self.emitter.display(fields, data, metadata or {})

    def clear_output(self, wait=False):
        self.emitter.event({"type": messages.CLEAR_OUTPUT, "wait": bool(wait)})


class EventDisplayHook(DisplayHook):
    """The last expression's value: an execute_result on the kernel side."""

    emitter: Emitter = None

    def start_displayhook(self):
        self._bundle = None

    def write_output_prompt(self):
        pass

    def write_format_data(self, format_dict, md_dict=None):
        self._bundle = (format_dict, md_dict or {})

    def quiet(self):
        """A trailing ``;`` silences the cell's last value, as in a kernel; IPython's own check
        reads the input history, which a worker does not keep."""
        cell = self.shell.running_cell
        return bool(cell) and self.semicolon_at_end_of_expression(cell)

    def finish_displayhook(self):
        if self._bundle is not None:
            data, md = self._bundle
            self.emitter.display({"type": messages.DISPLAY, "kind": "execute_result"}, data, md)
        self._bundle = None
