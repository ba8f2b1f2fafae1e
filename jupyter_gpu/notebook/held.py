"""What a worker holds for a kernel, and what was lost with a worker that is gone."""
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
