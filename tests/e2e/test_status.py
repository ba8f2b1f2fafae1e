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
