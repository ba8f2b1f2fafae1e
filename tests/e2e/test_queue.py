"""max_workers: beyond it a cell waits in line, sees its position live, and runs when a slot frees."""
from __future__ import annotations

import pytest

from conftest import FOOTER_MIME, LiveKernel

from .helpers import LOAD


def live_positions(cell) -> list:
    """The queue positions a cell's live status line showed, in order."""
    out = []
    for e in cell.iopub:
        data = e.msg["content"].get("data", {}).get(FOOTER_MIME)
        if isinstance(data, dict) and data.get("live") and data.get("phase") == "queued":
            out.append(data["position"])
    return out


@pytest.mark.timeout(180)
def test_beyond_max_workers_a_cell_queues_with_its_position_then_runs(fresh_kernel_env):
    env = dict(fresh_kernel_env, JUPYTER_GPU_MAX_WORKERS="1")
    a, b = LiveKernel(env), LiveKernel(env)
    try:
        a.run(LOAD)
        b.run(LOAD)
        a.run("%%gpu\nx = 1")  # a's warm lease holds the only cpu slot
        waiting = b.submit("%%gpu\nimport os\nprint('ran', os.getpid())")
        assert b.wait_until(lambda: live_positions(waiting) == [1], 60), "b never showed 'queued #1'"
        assert not waiting.done  # still waiting: a keeps its slot while warm
        a.run("%gpu release")
        assert b.wait_until(lambda: waiting.done, 60)
        assert waiting.reply["content"]["status"] == "ok" and waiting.stdout().startswith("ran ")
        final = waiting.footers()[-1]
        assert final["timings"]["queue"] > 0 and final["cold"] is True

        # an interrupt while queued takes the cell out of the line and fails it as interrupted
        b.run("%%gpu\nx = 2")  # b now holds the slot
        stuck = a.submit("%%gpu\nx = 3")
        assert a.wait_until(lambda: live_positions(stuck) == [1], 60)
        a.interrupt()
        assert a.wait_until(lambda: stuck.done, 30)
        assert stuck.reply["content"]["ename"] == "KeyboardInterrupt"
        assert "in the queue" in stuck.reply["content"]["evalue"]
    finally:
        a.shutdown()
        b.shutdown()
