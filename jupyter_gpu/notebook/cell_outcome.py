"""What a remote cell's events amounted to: its final event, what came back, and its error, rebuilt
here as the exception the local cell raises (showing the remote traceback)."""
from __future__ import annotations

import builtins

from jupyter_gpu._wire import serialization
from jupyter_gpu.errors import in_group


class CellOutcome:
    """Filled in by the notebook's sink (sink.py); ``exception()`` is what the local cell raises."""

    def __init__(self):
        self.done: dict = {}
        self.received = 0
        self.hashes: dict = {}
        self.refs: list = []
        self.deleted: list = []  # inputs the cell deleted (`del x`), deleted here too
        self.buffers: list = []  # the final event's buffers (a synced directory's files among them)
        self.clear_pending = False  # a clear_output(wait=True) held for the next output (sink.py)
        self.after_error: list | None = None  # once its error came: the outputs after it, to show (callables)
        self._text = None
        self._obj = None

    def error(self, h: dict, buffers: list) -> None:
        if "pickled" in h:
            try:
                self._obj = serialization.unpack("<exception>", h["pickled"], buffers)
            except Exception:
                self._obj = None  # the type name and the text still tell the story
        else:
            self._text = (h["ename"], h["evalue"], h.get("traceback", []))

    def show_after_error(self) -> None:
        """Publish the outputs that came after the cell's error (once the kernel showed it)."""
        held, self.after_error = self.after_error or [], None
        for show in held:
            show()

    def exception(self, done: dict) -> BaseException | None:
        if self._text is None and done.get("status") in ("ok", None):
            return None
        ename, evalue, stb = self._text or ("WorkerLost", f"the cell ended with status {done.get('status')}", [])
        where = f"on worker {done.get('worker')} ({done.get('device')})"
        exc = rebuild_exception(ename, evalue, [f"Remote traceback {where}:", *stb], self._obj)
        if self._text is not None and done.get("worker"):
            try:  # where its frames are: `%debug` here debugs there (debug.py)
                exc._jupyter_gpu_frames = {k: done.get(k) for k in ("worker", "gpu", "image", "device")}
            except AttributeError:  # __slots__
                pass
        return exc


class RemoteError(Exception):
    """Stands for a remote exception whose class does not exist (or unpickle) here."""


def rebuild_exception(ename: str, evalue: str, stb: list, obj=None) -> BaseException:
    """The exception to raise locally, showing the remote traceback (``_render_traceback_``)."""
    exc = obj if isinstance(obj, BaseException) else None
    if exc is None:
        cls = getattr(builtins, ename, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            try:
                exc = cls(evalue)
            except Exception:
                exc = None
    if exc is None:
        cls = type(ename, (RemoteError,), {"__module__": __name__})
        exc = cls(evalue)
    lines = list(stb) or [f"{ename}: {evalue}"]
    try:
        # IPython would print a group itself, and a SyntaxError (it never asks it to render
        # itself), with this kernel's frames: the worker's rendering is the local cell's
        if in_group(exc) or isinstance(exc, SyntaxError):
            raise AttributeError
        exc._render_traceback_ = lambda: lines
    except AttributeError:  # an exception class with __slots__, an exception group, a SyntaxError
        cls = type(ename, (RemoteError,), {"__module__": __name__})
        wrapped = cls(evalue)
        wrapped._render_traceback_ = lambda: lines
        wrapped.__cause__ = exc
        exc = wrapped
    return exc
