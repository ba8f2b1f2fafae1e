"""What a %%gpu cell's options and text become in its execute request (jupyter_gpu/notebook/cell_options.py)."""
from __future__ import annotations

import pytest

from jupyter_gpu.notebook.cell_options import nested_binds, remote_limits
from jupyter_gpu._wire.serialization import parse_size, size_hint


def test_sizes_read_as_memory_is_sized_and_bad_ones_name_the_setting():
    assert parse_size("4GiB") == parse_size("4g") == parse_size("4 GB") == 4 * 2**30
    assert parse_size("1.5MiB") == 1572864 and parse_size("512") == 512
    with pytest.raises(ValueError, match="JUPYTER_GPU_MAX_RETURN: '4 gigs' is not a size"):
        parse_size("4 gigs", "JUPYTER_GPU_MAX_RETURN")


def test_only_limits_that_differ_from_the_workers_default_travel(monkeypatch):
    monkeypatch.delenv("JUPYTER_GPU_MAX_RETURN", raising=False)
    assert remote_limits(None) == {} and remote_limits([]) == {}
    monkeypatch.setenv("JUPYTER_GPU_MAX_RETURN", "1MiB")
    assert remote_limits(["model"]) == {"keep_remote": ["model"], "max_return": 2**20}


def test_array_sizes_are_known_before_pickling_and_nothing_else_is_guessed():
    np = pytest.importorskip("numpy")
    assert size_hint(np.zeros((10, 10))) == 800
    assert size_hint(b"x" * 100) is None and size_hint([1, 2]) is None

    class Raising:
        @property
        def nbytes(self):
            raise RuntimeError("a property that computes and fails")

    assert size_hint(Raising()) is None


@pytest.mark.parametrize("cell, names", [
    ("%%capture cap\nprint(1)", {"cap"}),
    ("%%capture --no-stderr out\nprint(1)", {"out"}),
    ("  %%capture\nprint(1)", set()),  # nothing kept
    ("%%time\nx = 1", set()),
    ("x = 1", set()),
])
def test_a_nested_magic_line_binds_what_it_names(cell, names):
    assert nested_binds(cell) == names


def test_a_timeout_or_cost_limit_must_be_above_zero():
    """`--max-cost -1` or `--timeout 0` would stop the cell at once, or never: refused, saying why."""
    from jupyter_gpu.notebook.cell_options import positive

    assert positive("2.5") == 2.5
    for bad in ("0", "-1", "nan"):
        with pytest.raises(ValueError):
            positive(bad)
