"""Values that live on a worker: what it holds for this kernel (Held), what was lost with a worker
that is gone (Lost), and the RemoteValue that stands here for one that stayed there."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Held:
    """What one worker holds for this kernel: name -> content hash of the shared value."""

    worker: str | None = None
    values: dict = field(default_factory=dict)
    # names a cell left only on the worker (not brought back) -> the cell number that made them
    remote_only: dict = field(default_factory=dict)
    device: str = ""
    keep_warm: float | None = None
    pool: str | None = None  # "dedicated" / "serverless": the worker's pool, as the backend said
    lane: dict | None = None  # the worker's direct lane {path, secret}, granted by the backend
    lane_conn: object = None  # the open jupyter_gpu._wire.lane.LaneConnection, once used
    files: object = None  # files.Synced: what it holds of the kernel's directory, where it cannot see it
    functions: set = field(default_factory=set)  # the hashes of the functions it holds (functions/call.py)

    def drop_lane(self) -> None:
        if self.lane_conn is not None:
            self.lane_conn.close()
        self.lane = self.lane_conn = None


@dataclass
class Lost:
    """A name that lived only on a worker that is gone."""

    cell: int
    worker: str
    device: str
    keep_warm: float | None

    def explain(self, name: str) -> str:
        kw = f"its keep-warm window ({self.keep_warm:g} s) ran out, " if self.keep_warm is not None else ""
        return (
            f"'{name}' was made by cell [{self.cell}] and lived only on worker {self.worker} ({self.device}), "
            f"which is gone ({kw}it was released, or it crashed). Re-run cell [{self.cell}], bring the "
            "value back with --out, or raise --keep-warm."
        )


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

    ref: str | None = None  # a function call's value left on its worker (_wire/refs.py)

    def __reduce__(self):
        if self.ref is not None:  # unpickled on its worker as the value itself (nothing moves)
            from jupyter_gpu._wire import refs

            return refs.resolve, (self.worker, self.ref)
        raise TypeError(f"{self!r} lives on worker {self.worker}; use it inside a %%gpu cell")

    def __getattr__(self, attr):
        # what IPython, pickle and copy look for (`_repr_html_`, `__array__`, `__setstate__`) is
        # simply absent; what a user reaches for (`t.shape`, `model.eval`) says where it is and why
        if attr.startswith("_") or "why" not in self.__dict__:
            raise AttributeError(attr)
        why = f": {self.why.rstrip('.')}" if self.why else ""
        raise AttributeError(f"'{self.name}' is {self!r}, from cell [{self.cell}], and cannot be used here{why}. "
                             "Use it inside a %%gpu cell.")
