"""`%gpu status` and `%gpu release`."""
from __future__ import annotations

import re

import pytest

from .helpers import LOAD, last_footer, stream_text


def _assert_no_workers(status: str) -> None:
    # Other lines (e.g. which runtime is configured) may accompany it; no lease line may.
    lines = [ln.strip() for ln in status.splitlines()]
    assert "no workers" in lines, status
    assert "keep-warm" not in status, status


@pytest.mark.timeout(120)
def test_status_release_status(run_notebook):
    nb = run_notebook([LOAD, "%%gpu\nx = 1", "%gpu status", "%gpu release", "%gpu status"])
    worker = last_footer(nb.cells[1])["worker"]

    status = stream_text(nb.cells[2])
    lines = [ln for ln in status.splitlines() if "keep-warm" in ln]
    assert len(lines) == 1, f"expected one lease line:\n{status}"
    m = re.search(r"keep-warm:\s*(\d+)\s*s left", lines[0])
    assert m, status
    assert 0 < int(m.group(1)) <= 300
    assert "cpu" in lines[0] and worker in lines[0], status

    assert stream_text(nb.cells[3]).strip() == "released 1 worker(s)"
    _assert_no_workers(stream_text(nb.cells[4]))


@pytest.mark.timeout(120)
def test_status_before_any_cell_says_no_workers(run_notebook):
    nb = run_notebook([LOAD, "%gpu status"])
    _assert_no_workers(stream_text(nb.cells[1]))


@pytest.mark.timeout(120)
def test_prewarm_starts_the_worker_so_the_first_cell_is_warm(run_notebook, fresh_kernel_env):
    # without the embedded backend's early worker (which, started by then, makes prewarm say
    # "already warm": tests/integration/test_early_worker.py), prewarm itself starts the worker
    nb = run_notebook([LOAD, "%gpu prewarm --gpu H100,cpu", "%%gpu\nx = 1", "%gpu prewarm"],
                      env=dict(fresh_kernel_env, JUPYTER_GPU_EARLY_WORKER="0"))
    first = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert first.startswith("cpu worker w-") and "started in" in first, first
    assert last_footer(nb.cells[2])["cold"] is False
    assert "already warm" in "".join(o.get("text", "") for o in nb.cells[3].outputs)


@pytest.mark.timeout(120)
def test_gpu_fallback_list_runs_on_the_first_offered_type_and_says_when_none_is(run_notebook):
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError):
        run_notebook([LOAD, "%%gpu --gpu H100,cpu\nx = 1", "%%gpu --gpu H100,B200\nx = 2"])
    nb = run_notebook.last
    assert last_footer(nb.cells[1])["gpu"] == "cpu"
    err = next(o for o in nb.cells[2].outputs if o.output_type == "error")
    assert err.ename == "NoSuchDevice" and "H100, B200" in err.evalue and "offered: cpu" in err.evalue


@pytest.mark.timeout(120)
def test_status_right_after_a_lane_cell_shows_the_worker_idle_and_its_keep_warm_counting(run_notebook):
    """A lane cell that ran past 20 ms made the backend show its worker busy, and the worker
    reports its end only after 20 ms idle; `%gpu status` run right after it asks for that report,
    so the worker shows idle with its keep-warm window, not busy."""
    nb = run_notebook([LOAD, "%%gpu\nx = 1", "%%gpu\nimport time\ntime.sleep(0.2)", "%gpu status"])
    assert last_footer(nb.cells[2])["route"] == "lane"
    status = stream_text(nb.cells[3])
    line = next(ln for ln in status.splitlines() if last_footer(nb.cells[2])["worker"] in ln)
    assert " idle " in line and re.search(r"keep-warm:\s*\d+\s*s left", line), status
