"""Multi-device workers, pure logic: which device indices the local runtime's table gives a worker,
how `gpu=A100:2` is chosen or refused, and what a worker with N devices is priced at.  The GPU
tables here are data handed to the bookkeeping; nothing runs on them."""
from __future__ import annotations

import pytest

from jupyter_gpu.cost import pricing
from jupyter_gpu._wire.devices import choose, split
from jupyter_gpu.errors import NoSuchDevice
from jupyter_gpu_backend.runtimes.device_table import DeviceTable

TABLE = {"A100": [0, 1], "H100": [2, 3, 4, 5]}


def test_a_worker_gets_n_distinct_indices_of_its_type_least_used_first():
    t = DeviceTable(TABLE)
    assert t.assign("H100", 2) == [2, 3]
    assert t.assign("H100", 2) == [4, 5]  # the free ones, not 2 and 3 again
    assert t.assign("H100", 1) == [2]  # all in use once: the lowest index
    assert t.assign("A100", 2) == [0, 1]
    assert DeviceTable.visible([4, 5]) == "4,5" and DeviceTable.visible([]) == ""
    assert t.most() == {"A100": 2, "H100": 4}


def test_released_indices_are_given_out_again():
    t = DeviceTable(TABLE)
    a = t.assign("H100", 3)
    assert a == [2, 3, 4]
    t.release(a)
    assert t.assign("H100", 4) == [2, 3, 4, 5]
    t.release([2, 2, 2])  # over-release never goes negative
    assert t.in_use[2] == 0


def test_more_devices_than_the_type_has_is_refused_with_the_reason():
    t = DeviceTable(TABLE)
    with pytest.raises(NoSuchDevice, match=r"A100:3: this runtime has only 2 A100 device"):
        t.assign("A100", 3)
    with pytest.raises(NoSuchDevice, match=r"no B200 device"):
        t.assign("B200", 1)
    assert t.in_use == {}  # a refusal holds nothing


def test_cpu_is_no_device():
    t = DeviceTable({})
    assert t.assign("cpu", 1) == []
    with pytest.raises(NoSuchDevice, match=r"cpu:2: a cpu worker has no GPU devices"):
        t.assign("cpu", 2)


def test_choose_gives_the_pool_key_within_the_runtimes_devices():
    most = {"A100": 2, "H100": 4}
    assert choose("A100:2", ["A100", "H100", "cpu"], most) == "A100:2"
    assert choose("A100", ["A100", "cpu"], most) == "A100"
    assert choose("A100:4,H100:4", ["A100", "H100", "cpu"], most) == "H100:4"  # the next preference fits
    with pytest.raises(NoSuchDevice, match=r"A100:3: this runtime gives a worker at most 2 device\(s\) of type A100"):
        choose("A100:3", ["A100", "cpu"], most)
    with pytest.raises(NoSuchDevice, match=r"cpu:2: a cpu worker has no GPU devices"):
        choose("cpu:2", ["cpu"], most)
    with pytest.raises(NoSuchDevice, match=r"cpu:2: a cpu worker has no GPU devices"):
        choose("cpu:2", ["cpu"], 8)  # whatever the limit, a cpu is not a device
    assert split("A100:2") == ("A100", 2) and split("cpu") == ("cpu", 1)


def test_a_worker_with_n_devices_is_priced_n_times_one():
    one, two = pricing.price_for("H100"), pricing.price_for("H100:2")
    assert one.serverless_per_s > 0 and one.dedicated_per_h > 0  # the shipped catalog prices an H100
    assert two.serverless_per_s == pytest.approx(2 * one.serverless_per_s)
    assert two.dedicated_per_h == pytest.approx(2 * one.dedicated_per_h)
    assert two.serverless_as_of == one.serverless_as_of and two.serverless_source == one.serverless_source
