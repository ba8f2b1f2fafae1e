"""A `%%gpu` cell's shell behaves as the kernel's own where a differential case (test_differential.py)
cannot say it: an empty cell, the pager's payload, the kernel's magics, an error after a failed
unpickling.  Real kernels (nbclient, jupyter_client), the real embedded backend and workers."""
from __future__ import annotations

import pytest

from .helpers import LOAD, stream_text


@pytest.mark.timeout(180)
def test_an_empty_gpu_cell_runs_nothing_and_shows_nothing(run_notebook):
    nb = run_notebook([
        LOAD,
        "%%gpu",
        "%%gpu --gpu cpu\n\n   \n",
        "%%gpu\n",
        "from jupyter_gpu.notebook import extension\n"
        "s = extension.magics.session\nprint(s.client is None, s.last_footer is None)",
    ])
    for cell in nb.cells[1:4]:
        assert cell["outputs"] == [], f"{cell['source']!r}: {cell['outputs']}"
    assert stream_text(nb.cells[4]) == "True True\n"  # no backend asked, no footer: no worker started
