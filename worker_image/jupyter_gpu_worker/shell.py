"""An InteractiveShell whose every output becomes an event for the kernel that sent the cell.

stdout/stderr are line-buffered into an EventStream that a flusher thread sends (coalescing under
load, never dropping); the display publisher, the display hook and the traceback printer emit
events directly.  Every event goes through one ``Emitter`` that keeps them in order.
"""
from __future__ import annotations

import ast
import base64
import datetime
import io
import json
import math
import numbers
import sys
import threading
from types import CodeType

from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import ExecutionInfo, ExecutionResult, InteractiveShell
from traitlets.config import Config

from jupyter_gpu._wire import framing, messages
from jupyter_gpu.errors import in_group

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


def _execution_info(raw_cell: str, cell: str) -> ExecutionInfo:
    """What IPython's events get about a cell (``pre_run_cell``), in any IPython we support."""
    try:
        return ExecutionInfo(raw_cell, False, False, True, None, transformed_cell=cell)
    except TypeError:  # IPython 8 before ``transformed_cell``
        return ExecutionInfo(raw_cell, False, False, True, None)


def _run(coro) -> bool:
    """Drive one of IPython's coroutines that never awaits (run_code of a synchronous cell)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("a synchronous cell's code awaited")


def _renamed(code: CodeType, name: str) -> CodeType:
    """``code`` (and the functions and classes it defines) as if compiled under ``name``."""
    consts = code.co_consts
    if any(isinstance(c, CodeType) for c in consts):
        consts = tuple(_renamed(c, name) if isinstance(c, CodeType) else c for c in consts)
        return code.replace(co_filename=name, co_consts=consts)
    return code.replace(co_filename=name)


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


def _clip(text: str, most: int = TEXT_PIECE // 4) -> str:
    """An error's text as a message can carry it: a 30 MB message is shown by its start."""
    if len(text) <= most:
        return text
    return f"{text[:most]}… [{len(text) - most} more characters not shown]"


def _text_size(obj) -> int:
    """About how many characters ``obj`` (jsonable) takes as JSON: its strings' length, counted
    deep only where a value is not a string (a JSON mime type's data)."""
    if isinstance(obj, str):
        return len(obj)
    if isinstance(obj, dict):
        return sum(len(k) + _text_size(v) for k, v in obj.items())
    if isinstance(obj, list):
        return sum(_text_size(v) for v in obj)
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


class WorkerShell(InteractiveShell):
    """Runs cells like a kernel would, with outputs turned into events."""

    emitter: Emitter = None
    last_error: BaseException | None = None
    _transformed: dict = {}  # raw cell -> transformed source (cells are re-run as they are)
    _compiled: dict = {}  # (transformed source, __future__ flags) -> its statements' code objects
    running_cell: str | None = None  # the running cell's source, transformed (EventDisplayHook.quiet)

    def run_cell_fast(self, raw_cell: str) -> ExecutionResult:
        """``run_cell(raw_cell, store_history=False)``, except that a cell run again is not parsed
        and compiled again: IPython's per-cell work costs ~0.25 ms here with the CPU caches cold
        after the kernel's turn, most of it in the parser.  Everything else is IPython's own: the
        events, the display hook, ``run_code`` (so errors, interrupts and ``SystemExit`` behave
        the same), the cell's name in tracebacks (``Cell In[n]``).  Left out: copying the cell's
        output into the (disabled) history.  What this path does not cover (top-level ``await``,
        AST transformers, another interactivity, a transform or syntax error) takes ``run_cell``."""
        cell = self._transformable(raw_cell)
        self.running_cell = cell if cell is not None else raw_cell
        if cell is None:
            return self.run_cell(raw_cell, store_history=False)
        n = self.execution_count
        name = self.compile.cache(cell, n, raw_code=raw_cell)
        steps = self._steps(cell, name)
        if steps is None:
            return self.run_cell(raw_cell, store_history=False)
        info = _execution_info(raw_cell, cell)
        result = ExecutionResult(info)
        result.execution_count = n
        failed = False
        try:
            self.events.trigger("pre_execute")
            self.events.trigger("pre_run_cell", info)
            self.logger.log(cell, raw_cell)
            with self.builtin_trap, self.display_trap:
                self.displayhook.exec_result = result
                for code in steps:
                    failed = _run(self.run_code(_renamed(code, name), result))
                    if failed:
                        break
                self.last_execution_succeeded = not failed
                self.last_execution_result = result
                self.displayhook.exec_result = None
        finally:
            self.events.trigger("post_execute")
            self.events.trigger("post_run_cell", result)
        return result

    def _transformable(self, raw_cell: str) -> str | None:
        if not raw_cell or raw_cell.isspace() or self.ast_transformers or self.ast_node_interactivity != "last_expr":
            return None
        try:
            cell = self.transform_cell(raw_cell)
        except Exception:
            return None  # run_cell shows the transform's error
        if self.should_run_async(raw_cell, transformed_cell=cell):
            return None
        return cell

    def _steps(self, cell: str, name: str) -> list | None:
        """The cell's statements compiled as ``run_ast_nodes`` compiles them (a last expression
        in "single" mode, so the display hook shows it); None when it does not compile."""
        key = (cell, self.compile.flags)  # a __future__ import changes how the same text compiles
        steps = self._compiled.get(key)
        if steps is not None:
            return steps
        try:
            body = self.compile.ast_parse(cell, filename=name).body
            last = len(body) - 1 if body and isinstance(body[-1], ast.Expr) else len(body)
            steps = [self.compile(ast.Interactive([node]), name, "single") if k == last
                     else self.compile(ast.Module([node], []), name, "exec") for k, node in enumerate(body)]
        except Exception:
            return None  # run_cell reports it with the cell's name and line numbers
        if len(self._compiled) >= 256:
            self._compiled.clear()
        self._compiled[key] = steps
        return steps

    def transform_cell(self, raw_cell):
        # The static input transforms are a pure function of the text (~0.15 ms a cell here);
        # a one-line cell also gets prefilter's dynamic transforms, which read the namespace.
        if "\n" not in raw_cell.strip():
            return super().transform_cell(raw_cell)
        cell = self._transformed.get(raw_cell)
        if cell is None:
            if len(self._transformed) >= 256:
                self._transformed.clear()
            cell = self._transformed[raw_cell] = super().transform_cell(raw_cell)
        return cell

    def showtraceback(self, exc_tuple=None, filename=None, tb_offset=None, exception_only=False,
                      running_compiled_code=False):
        # IPython prints an exception group with traceback.print_exc, to stderr and past
        # _showtraceback; the kernel would then print it again, with its own frames.  Here it
        # becomes the cell's error like any other, with the group's standard formatting.
        try:
            etype, value, tb = self._get_exc_info(exc_tuple)
        except ValueError:
            etype = value = None
        if value is not None and not exception_only and in_group(value):
            import traceback

            self._showtraceback(etype, value, [s.rstrip("\n") for s in traceback.format_exception(etype, value, tb)])
            return
        super().showtraceback(exc_tuple, filename, tb_offset, exception_only, running_compiled_code)

    def _showtraceback(self, etype, evalue, stb):
        self.last_error = evalue
        self.emitter.event(
            {
                "type": messages.ERROR,
                "ename": getattr(etype, "__name__", str(etype)),
                "evalue": _clip(str(evalue)),
                "traceback": [_clip(line) for line in stb],
            }
        )

    def should_run_async(self, raw_cell, *, transformed_cell=None, preprocessing_exc_tuple=None):
        # IPython compiles every cell once more just to look for a top-level await; a cell that
        # does not even contain the words cannot have one
        text = transformed_cell if transformed_cell is not None else raw_cell
        if "await" not in text and "async" not in text:
            return False
        return super().should_run_async(
            raw_cell, transformed_cell=transformed_cell, preprocessing_exc_tuple=preprocessing_exc_tuple
        )

    def enable_gui(self, gui=None):
        pass  # no event loop integration on a worker

    def system(self, cmd):
        # `!cmd` output must go through our streams, not the worker's inherited fd 1.
        import subprocess

        cmd = self.var_expand(cmd, depth=1)  # `!echo {x} $y`, as IPython's own system does
        p = subprocess.run(cmd, shell=True, capture_output=True, text=True, errors="replace")
        if p.stdout:
            sys.stdout.write(p.stdout)
        if p.stderr:
            sys.stderr.write(p.stderr)
        self.user_ns["_exit_code"] = p.returncode


def create_shell() -> WorkerShell:
    """The worker's shell, created once (a zygote creates it before forking its workers)."""
    if WorkerShell.initialized():
        return WorkerShell.instance()
    cfg = Config()
    cfg.HistoryManager.enabled = False  # no SQLite writes per cell (~0.5 ms), and no thread
    cfg.InteractiveShell.colors = "Linux"
    cfg.InteractiveShell.xmode = "Context"
    return WorkerShell.instance(
        config=cfg,
        display_pub_class=EventDisplayPublisher,
        displayhook_class=EventDisplayHook,
    )


def make_shell(emitter: Emitter, ask_user=None) -> WorkerShell:
    """The shell with every output routed to ``emitter``; ``input()`` and ``getpass()`` in a cell
    call ``ask_user(prompt, password)`` (the kernel asks the notebook's user, as ipykernel does)."""
    shell = create_shell()
    if ask_user is not None:
        import builtins
        import getpass

        builtins.input = lambda prompt="": ask_user(str(prompt), False)
        getpass.getpass = lambda prompt="Password: ", stream=None: ask_user(str(prompt), True)
    EventDisplayPublisher.emitter = emitter
    EventDisplayHook.emitter = emitter
    WorkerShell.emitter = emitter
    sys.stdout = EventStream(emitter, "stdout")
    sys.stderr = EventStream(emitter, "stderr")
    return shell
