"""When the backend dates a lane cell the worker reported after it ended (lane_cells.ended_at): its
report's ``ended_ago`` is late by the time the report spent in transit (18 ms in a busy backend's
loop in a CI run put a ledger row after the cell's footer ended), so the worker's own clock wins
where it agrees with ours; a clock far off, or a report that is not a number, falls back to
``ended_ago``, and nothing is dated later than the report allows."""
from __future__ import annotations

import pytest

from jupyter_gpu_backend.scheduling.lane_cells import CLOCK_SLACK, ended_at

NOW = 1_800_000_000.0


def test_the_worker_clock_undoes_the_time_the_report_waited():
    # the cell ended at NOW - 0.05; the report said 0.03 s ago but reached us 0.02 s after it left
    assert ended_at(NOW, 0.03, NOW - 0.05) == NOW - 0.05


def test_without_the_worker_clock_ended_ago_dates_it():
    assert ended_at(NOW, 0.03, None) == NOW - 0.03
    assert ended_at(NOW, 0.03, "yesterday") == NOW - 0.03


@pytest.mark.parametrize("clock", [NOW + 5.0, NOW - 0.01, NOW - 0.03 - CLOCK_SLACK - 0.01, NOW - 3600, float("nan")])
def test_a_clock_ahead_or_far_behind_is_not_believed(clock):
    # ahead of what ended_ago allows (a worker cannot end a cell after it reported it), or skewed
    # (a remote node), or forged: the report's own age dates it
    assert ended_at(NOW, 0.03, clock) == NOW - 0.03


def test_a_bad_ended_ago_counts_as_now():
    assert ended_at(NOW, -4.0, None) == NOW
    assert ended_at(NOW, True, NOW - 0.2) == NOW - 0.2
