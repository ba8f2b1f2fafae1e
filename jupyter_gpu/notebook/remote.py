"""What comes back from a worker that is not a plain value: remote references and remote errors."""
from __future__ import annotations

import builtins

from jupyter_gpu.errors import in_group


class RemoteValue:
    """A value that stays on its worker (it could not be pickled back).

    Using the name in a later ``%%gpu`` cell on the same worker costs no transfer; once the worker
    is gone, using it raises RemoteValueLost naming the cell that made it.
    """

    def __init__(self, name: str, type_name: str, device: str, worker: str, gpu: str, hash: str, cell: int, why: str):
        self.name, self.type_name, self.device = name, type_name, device
        self.worker, self.gpu, self.hash, self.cell, self.why = worker, gpu, hash, cell, why

    def __repr__(self) -> str:
        return f"<remote {self.type_name} on {self.device}>"

    def __reduce__(self):
        raise TypeError(f"{self!r} lives on worker {self.worker}; use it inside a %%gpu cell")

    def __getattr__(self, attr):
        # what IPython, pickle and copy look for (`_repr_html_`, `__array__`, `__setstate__`) is
        # simply absent; what a user reaches for (`t.shape`, `model.eval`) says where it is and why
        if attr.startswith("_") or "why" not in self.__dict__:
            raise AttributeError(attr)
        why = f": {self.why.rstrip('.')}" if self.why else ""
        raise AttributeError(f"'{self.name}' is {self!r}, from cell [{self.cell}], and cannot be used here{why}. "
                             "Use it inside a %%gpu cell.")


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
        if in_group(exc):  # IPython would print a group itself, with this kernel's frames
            raise AttributeError
        exc._render_traceback_ = lambda: lines
    except AttributeError:  # an exception class with __slots__, or an exception group
        cls = type(ename, (RemoteError,), {"__module__": __name__})
        wrapped = cls(evalue)
        wrapped._render_traceback_ = lambda: lines
        wrapped.__cause__ = exc
        exc = wrapped
    return exc
