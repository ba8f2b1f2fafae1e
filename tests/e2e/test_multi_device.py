"""`%%gpu --gpu cpu:2` through a real kernel and backend: refused with the reason (a cpu worker has
no devices to be given two of), and the next cell runs."""
from __future__ import annotations

import pytest

from .helpers import LOAD, last_footer


@pytest.mark.timeout(120)
def test_more_devices_than_a_worker_can_get_is_refused_with_the_reason(run_notebook):
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError):
        run_notebook([LOAD, "%%gpu --gpu cpu:2\nx = 1"])
    nb = run_notebook.last
    err = next(o for o in nb.cells[1].outputs if o.output_type == "error")
    assert err.ename == "NoSuchDevice" and "cpu:2: a cpu worker has no GPU devices" in err.evalue, err.evalue


@pytest.mark.timeout(120)
def test_after_a_refusal_the_kernel_keeps_working(run_notebook):
    nb = run_notebook([LOAD, "try:\n    get_ipython().run_cell_magic('gpu', '--gpu cpu:2', 'x = 1')\n"
                             "except Exception as e:\n    print(type(e).__name__, e)", "%%gpu\nx = 2"])
    out = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert "NoSuchDevice" in out and "cpu:2" in out, out
    assert last_footer(nb.cells[2])["status"] == "ok"
