"""Choosing a device type from the `gpu=` option, with fallbacks."""
import pytest

from jupyter_gpu._wire.devices import choose, parse
from jupyter_gpu.errors import NoSuchDevice


def test_parse_types_counts_and_fallbacks():
    assert parse("H100:2, A100") == [("H100", 2), ("A100", 1)]


def test_first_offered_type_wins_in_order_of_preference():
    assert choose("H100,A100,cpu", ["A100", "cpu"]) == "A100"
    assert choose("H100,cpu", ["cpu"]) == "cpu"


def test_nothing_offered_names_what_was_asked_and_what_is_there():
    with pytest.raises(NoSuchDevice, match=r"no runtime offers H100, A100; offered: cpu"):
        choose("H100, A100", ["cpu"])


def test_more_devices_than_a_worker_gets_says_so():
    with pytest.raises(NoSuchDevice, match=r"A100:2: this runtime gives a worker at most 1 device"):
        choose("A100:2", ["A100", "cpu"])


@pytest.mark.parametrize("bad", ["", " , ", "A100:0", "A100:x"])
def test_malformed_specs_are_refused(bad):
    with pytest.raises(NoSuchDevice):
        parse(bad)


def test_the_run_fallback_is_tried_last_and_only_when_nothing_asked_for_is_offered():
    from jupyter_gpu._wire.devices import with_fallback

    assert with_fallback("H100,A100", "cpu") == "H100,A100,cpu"
    assert choose(with_fallback("H100", "cpu"), ["cpu"]) == "cpu"
    assert choose(with_fallback("H100", "cpu"), ["H100", "cpu"]) == "H100"
    assert with_fallback("H100,cpu", "cpu") == "H100,cpu"  # already in the list: not repeated
    assert with_fallback("H100", "") == "H100"


def test_the_fallback_comes_from_the_environment(monkeypatch):
    from jupyter_gpu._wire.devices import FALLBACK_ENV, with_fallback

    monkeypatch.setenv(FALLBACK_ENV, "cpu")
    assert with_fallback("A100") == "A100,cpu"
    monkeypatch.delenv(FALLBACK_ENV)
    assert with_fallback("A100") == "A100"
