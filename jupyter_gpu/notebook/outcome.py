"""What a remote cell's events amounted to: its final event, what came back, and its error."""
from __future__ import annotations

from jupyter_gpu._wire import serialization
from jupyter_gpu.notebook.remote import rebuild_exception


class CellOutcome:
    """Filled in by ``KernelSession._drain``; ``exception()`` is what the local cell raises."""

    def __init__(self):
        self.done: dict = {}
        self.received = 0
        self.hashes: dict = {}
        self.refs: list = []
        self.deleted: list = []  # inputs the cell deleted (`del x`), deleted here too
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

    def exception(self, done: dict) -> BaseException | None:
        if self._text is None and done.get("status") in ("ok", None):
            return None
        ename, evalue, stb = self._text or ("WorkerLost", f"the cell ended with status {done.get('status')}", [])
        where = f"on worker {done.get('worker')} ({done.get('device')})"
        return rebuild_exception(ename, evalue, [f"Remote traceback {where}:", *stb], self._obj)
