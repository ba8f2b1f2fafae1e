"""The live status line of a cell that waits (queue, cold start) or runs for a while."""
from __future__ import annotations

import time

from jupyter_gpu.cost import footer, saved
from jupyter_gpu.notebook.publish import Publisher

LIVE_AFTER = 0.5  # a cell still running after this long gets a live status line


class LiveStatus:
    """The live status line of a cell that waits (queue, cold start) or runs for a while.

    At the end it is updated to an empty bundle, so only the final footer shows (a saved notebook
    drops that empty output: cost/saved.py).  A clear_output the cell sends to its output area takes
    the line with it: ``lost`` makes the next one a new display, at the end of the outputs (updating
    the old display id would overwrite whatever the frontend put in its place).
    """

    def __init__(self, pub: Publisher, display_id: str, gpu: str, t0: float):
        self.pub, self.display_id, self.gpu, self.t0 = pub, display_id, gpu, t0
        self._base, self._lost = display_id, 0
        self.shown = False
        self.phase = "running"
        self.position = None
        self.detail = ""  # what a cold start waits for (the backend says, e.g. room on a Ray node)
        self.next_tick = t0 + LIVE_AFTER
        self.watch = None  # told each new phase (a map's progress counts the batches that wait: functions/progress.py)

    def show(self, phase: str, position: int | None = None, detail: str | None = None) -> None:
        if phase != self.phase:
            self.detail = ""
            if self.watch is not None:
                self.watch(phase)
        self.phase, self.position = phase, position
        if detail is not None:
            self.detail = detail
        now = time.monotonic()
        self.pub.display(
            footer.live_bundle(phase, self.gpu, now - self.t0, position, self.detail), {},
            {"display_id": self.display_id}, update=self.shown,
        )
        self.shown = True
        self.next_tick = now + 1.0

    def tick(self) -> None:
        if time.monotonic() >= self.next_tick:
            self.show(self.phase, self.position if self.phase == "queued" else None)

    def lost(self) -> None:
        """The cell's output area was cleared, this line with it."""
        if self.shown:
            self.shown = False
            self._lost += 1
            self.display_id = f"{self._base}-{self._lost}"

    def clear(self) -> None:
        if self.shown:
            self.pub.display({}, dict(saved.EMPTIED), {"display_id": self.display_id}, update=True)
            self.shown = False
