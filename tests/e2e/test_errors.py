"""An exception in a %%gpu cell fails the local cell like a local exception would."""
from __future__ import annotations

import re

import pytest
from nbclient.exceptions import CellExecutionError

from .helpers import LOAD, error_output, footers, is_footer, traceback_text


@pytest.mark.timeout(120)
def test_zero_division_fails_the_cell_with_the_cells_own_line_number(run_notebook):
    # Numbered from the body's first line, as a local cell with this body (and IPython's own cell
    # magics) numbers it: the failing line is line 2.
    src = "%%gpu\nx = 1\ny = x / 0\nprint('not reached')"
    with pytest.raises(CellExecutionError) as info:
        run_notebook([LOAD, src])
    assert info.value.ename == "ZeroDivisionError"
    cell = run_notebook.last.cells[1]
    err = error_output(cell)
    assert err["ename"] == "ZeroDivisionError"
    assert "division by zero" in err["evalue"]
    tb = traceback_text(err)
    assert "y = x / 0" in tb, tb
    # IPython style: "----> 2 y = x / 0" or "line 2" in the frame of the cell.
    arrow = re.search(r"-+>\s*(\d+)\s+y = x / 0", tb)
    if arrow:
        assert arrow.group(1) == "2", tb
    else:
        m = re.search(r"line (\d+)[^\n]*\n(?:[^\n]*\n){0,3}?[^\n]*y = x / 0", tb)
        assert m and m.group(1) == "2", tb
    assert "not reached" not in "".join(o.get("text", "") for o in cell["outputs"])


@pytest.mark.timeout(120)
def test_custom_exception_class_keeps_its_name_and_message(run_notebook):
    src = "%%gpu\nclass MyErr(Exception):\n    pass\nraise MyErr('boom')"
    with pytest.raises(CellExecutionError) as info:
        run_notebook([LOAD, src])
    assert info.value.ename == "MyErr"
    assert info.value.evalue == "boom"
    err = error_output(run_notebook.last.cells[1])
    assert (err["ename"], err["evalue"]) == ("MyErr", "boom")


@pytest.mark.timeout(120)
def test_failing_gpu_cell_stops_the_notebook(run_notebook):
    cells = [LOAD, "print('before')", "%%gpu\nraise ValueError('stop here')", "print('after')"]
    with pytest.raises(CellExecutionError) as info:
        run_notebook(cells)
    assert info.value.ename == "ValueError"
    nb = run_notebook.last
    assert nb.cells[1]["outputs"][0]["text"] == "before\n"
    assert error_output(nb.cells[2])["evalue"] == "stop here"
    assert nb.cells[3]["outputs"] == [] and nb.cells[3].get("execution_count") is None


@pytest.mark.timeout(120)
def test_failed_cell_has_an_error_footer_as_last_output(run_notebook):
    with pytest.raises(CellExecutionError):
        run_notebook([LOAD, "%%gpu\nraise RuntimeError('bad')"])
    cell = run_notebook.last.cells[1]
    fs = footers(cell)
    assert fs, f"no footer on a failed %%gpu cell: {cell['outputs']}"
    assert fs[-1]["status"] == "error"
    # Contract: every %%gpu cell's LAST output is the footer, failed cells included.
    assert is_footer(cell["outputs"][-1]), [o["output_type"] for o in cell["outputs"]]


@pytest.mark.timeout(120)
def test_the_remote_traceback_names_the_cell_by_the_kernels_execution_count(run_notebook):
    """As a local traceback would: "Cell In[3]" for the notebook's third executed cell, whatever
    the worker ran before it."""
    with pytest.raises(CellExecutionError):
        run_notebook([LOAD, "%%gpu\na = 1", "%%gpu\nraise ValueError('third')"])
    nb = run_notebook.last
    assert nb.cells[2]["execution_count"] == 3
    tb = traceback_text(error_output(nb.cells[2]))
    assert re.search(r"Cell In\[3\], line 1", tb), tb


@pytest.mark.timeout(120)
def test_sys_exit_in_a_gpu_cell_looks_as_it_does_locally_with_the_footer_last(run_notebook):
    """IPython answers SystemExit with a warning on stderr ("To exit: use 'exit', ..."): the
    worker's comes through once, the kernel re-raising the exception does not print a second one
    after the footer."""
    with pytest.raises(CellExecutionError):
        run_notebook([LOAD, "%%gpu\nimport sys\nsys.exit(3)"])
    cell = run_notebook.last.cells[1]
    assert error_output(cell)["ename"] == "SystemExit"
    warnings = [o for o in cell["outputs"] if o["output_type"] == "stream" and "To exit: use" in o["text"]]
    assert len(warnings) == 1, cell["outputs"]
    assert is_footer(cell["outputs"][-1]), [o["output_type"] for o in cell["outputs"]]


@pytest.mark.timeout(120)
def test_an_exception_group_is_shown_once_with_the_cells_frames(run_notebook):
    """IPython prints an exception group itself, past `_render_traceback_`: it used to show twice,
    the second time with jupyter-gpu's own frames in the kernel."""
    src = "%%gpu\nraise ExceptionGroup('many', [ValueError('one'), TypeError('two')])"
    with pytest.raises(CellExecutionError) as info:
        run_notebook([LOAD, src])
    assert info.value.ename == "ExceptionGroup"
    cell = run_notebook.last.cells[1]
    errors = [o for o in cell["outputs"] if o["output_type"] == "error"]
    assert len(errors) == 1, cell["outputs"]
    tb = traceback_text(errors[0])
    assert "raise ExceptionGroup" in tb and "ValueError: one" in tb and "TypeError: two" in tb, tb
    shown = tb + "".join(o.get("text", "") for o in cell["outputs"] if o["output_type"] == "stream")
    assert shown.count("ValueError: one") == 1 and "jupyter_gpu" not in shown, shown
