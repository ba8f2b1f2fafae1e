"""`jupyter-gpu run`'s executor (jupyter_gpu/ci/executor.py) never waits out a cell's timeout for a
reply that came: nbclient, on a notebook whose cells show ``interact`` widgets (an Output widget,
whose captured outputs nbclient sends back on the kernel's shell socket), missed 2-3 replies in 40
such cells here and waited each one's whole timeout (nbclient#312); `jupyter-gpu run --timeout 600`
would have sat 10 minutes on each, and the tests' notebooks lost a worker to a keep-warm that ran
out meanwhile.  A real kernel runs the cells; each cell's time is from its request to its reply
seen (nbclient's own hooks)."""
from __future__ import annotations

import time

import nbformat

from jupyter_gpu.ci import runner
from jupyter_gpu.ci.executor import NotebookClient

TIMEOUT = 20  # s per cell: a missed reply is seen only when it runs out (an interact cell takes ~0.1 s)
CELLS = 40


def test_no_widget_cell_waits_out_its_timeout(kernel_env, tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("from ipywidgets import interact")]
    nb.cells += [nbformat.v4.new_code_cell(f"interact(lambda x: x * 2, x={i});") for i in range(CELLS)]
    began, took = {}, {}
    client = NotebookClient(nb, kernel_name="python3", timeout=TIMEOUT, startup_timeout=120,
                            resources={"metadata": {"path": str(tmp_path)}},
                            on_cell_execute=lambda cell, cell_index: began.__setitem__(cell_index, time.monotonic()),
                            on_cell_executed=lambda cell, cell_index, execute_reply: took.__setitem__(
                                cell_index, time.monotonic() - began[cell_index]))
    client.execute(env=kernel_env)
    assert len(took) == CELLS + 1
    waited = {i: round(t, 1) for i, t in took.items() if t >= TIMEOUT / 2}
    assert not waited, f"cells that waited for a reply that had come, until their timeout ran out: {waited}"
    # every cell showed its widget, as a frontend would (the Output widget's outputs came back too)
    assert all(c.outputs and "application/vnd.jupyter.widget-view+json" in c.outputs[0]["data"] for c in nb.cells[1:])


def test_jupyter_gpu_run_uses_that_executor():
    assert issubclass(runner._client_class(), NotebookClient)
