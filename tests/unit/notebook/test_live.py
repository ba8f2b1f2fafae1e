"""The live status line of a waiting cell (jupyter_gpu/notebook/live.py): what it says, and for how long."""
from __future__ import annotations

from jupyter_gpu.cost.footer import MIME
from jupyter_gpu.notebook.live import LiveStatus


class Recorder:  # stands in for the kernel's iopub inside this unit test only
    def __init__(self):
        self.shown = []

    def display(self, data, metadata, transient=None, update=False):
        self.shown.append(data)


def test_a_cold_start_says_what_it_waits_for_until_its_phase_changes():
    pub = Recorder()
    live = LiveStatus(pub, "d", "A100", 0.0)
    live.show("cold_start")
    assert "detail" not in pub.shown[-1][MIME] and pub.shown[-1]["text/plain"].startswith("gpu: cold start on A100")
    why = "waiting for Ray to place the worker: it needs 0.5 CPU, 1 GPU; free in the cluster: 0 GPU"
    live.show("cold_start", None, why)
    assert pub.shown[-1][MIME]["detail"] == why and pub.shown[-1]["text/plain"].endswith(f"· {why}")
    live.next_tick = 0.0
    live.tick()  # the elapsed time moves on; the reason stays
    assert pub.shown[-1][MIME]["detail"] == why
    live.show("cold_start", None, "")  # placed: only booting now
    assert "detail" not in pub.shown[-1][MIME]
    live.show("cold_start", None, why)
    live.show("running")  # a new phase starts without the old phase's reason
    assert "detail" not in pub.shown[-1][MIME] and "waiting" not in pub.shown[-1]["text/plain"]
