"""Autoscaling decisions, pure logic: how many spares a GPU type should have."""
from __future__ import annotations

import pytest

from jupyter_gpu_backend.scheduling.autoscale import spares_for_utilisation, target_spares


def test_spares_for_utilisation_keeps_the_ratio_strictly_under_the_target():
    assert spares_for_utilisation(0, 0.7) == 0  # nothing leased: no spare needed
    for leased in range(1, 40):
        for target in (0.5, 0.7, 0.8, 0.9):
            s = spares_for_utilisation(leased, target)
            assert leased / (leased + s) < target  # enough
            assert s == 0 or leased / (leased + s - 1) >= target  # and no more than that
    assert spares_for_utilisation(1, 0.7) == 1 and spares_for_utilisation(3, 0.7) == 2
    assert spares_for_utilisation(1, 0.5) == 2  # 1/2 is not under 0.5
    for bad in (0.0, 1.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="between 0 and 1"):
            spares_for_utilisation(1, bad)


def test_min_warm_alone_is_the_floor():
    assert target_spares(min_warm=2) == 2
    assert target_spares(min_warm=2, leased=10, waiting=10) == 2  # no rule set: demand changes nothing


def test_queue_depth_starts_a_spare_per_n_waiting_beyond_min_warm():
    assert target_spares(min_warm=1, waiting=1, scale_up_queue=2) == 1  # under the trigger
    assert target_spares(min_warm=1, waiting=2, scale_up_queue=2) == 2
    assert target_spares(min_warm=0, waiting=5, scale_up_queue=2) == 2


def test_target_utilisation_counts_free_dedicated_workers_as_spares():
    assert target_spares(leased=3, target_utilisation=0.7) == 2
    assert target_spares(leased=3, free_dedicated=1, target_utilisation=0.7) == 1
    assert target_spares(leased=3, free_dedicated=5, target_utilisation=0.7) == 0
    assert target_spares(min_warm=4, leased=3, target_utilisation=0.7) == 4  # the larger rule wins


def test_everything_stays_within_max_workers():
    assert target_spares(leased=3, busy_serverless=3, target_utilisation=0.7, max_workers=4) == 1
    assert target_spares(leased=4, busy_serverless=4, target_utilisation=0.7, max_workers=4) == 0
    assert target_spares(waiting=8, busy_serverless=2, scale_up_queue=1, max_workers=5) == 3
    assert target_spares(min_warm=3, max_workers=2) == 2
