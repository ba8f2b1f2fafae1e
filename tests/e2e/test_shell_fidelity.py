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
        "s = extension.magics.session\nprint(s.held == {}, s.last_footer is None)",
    ])
    for cell in nb.cells[1:4]:
        assert cell["outputs"] == [], f"{cell['source']!r}: {cell['outputs']}"
    # no worker held, no footer: nothing ran (the session itself is open since %load_ext's cell: preconnect)
    assert stream_text(nb.cells[4]) == "True True\n"


@pytest.mark.timeout(180)
def test_cost_figures_are_not_typeset_as_latex_math(run_notebook):
    """Two prices on a line (`$0.01 serverless vs $0.02 dedicated`) are LaTeX math to MathJax:
    JupyterLab typesets HTML outputs, GitHub and pandoc typeset Markdown."""
    from jupyter_gpu.cost import report

    nb = run_notebook([LOAD, "%%gpu\nx = 1", "%gpu cost"])
    cost = [o for o in nb.cells[2]["outputs"] if o["output_type"] == "display_data"]
    assert len(cost) == 1, nb.cells[2]["outputs"]
    data = cost[0]["data"]
    assert "mathjax_ignore" in data["text/html"].split(">", 1)[0]  # the outermost element: MathJax skips it all
    assert "serverless vs $" in data["text/plain"] and "\\$" not in data["text/plain"]
    foot = nb.cells[1]["outputs"][-1]["data"]["text/html"]
    assert "$" in foot and "mathjax_ignore" in foot.split(">", 1)[0]
    # the saved notebook's report as Markdown: every dollar escaped, none left to pair up
    md = report.to_markdown(report.build([("a.ipynb", nb), ("b $x.ipynb", nb)]))
    assert md.count("\\$") >= 3 and "$" not in md.replace("\\$", "").replace("`b $x.ipynb`", "")


PAGED = ["len?", "len??", "%timeit?", "import json\njson.dumps?", "def f(x):\n    'doc'\n    return x\nf??"]


@pytest.mark.timeout(300)
def test_help_reaches_the_pager_as_the_local_cells_payload(live_kernel, tmp_path):
    """`obj?`, `%magic?`, `%less` page their text: a kernel's execute_reply carries it as its
    payload (JupyterLab shows it below the cell), not as output."""
    text = tmp_path / "notes.txt"
    text.write_text("paged text\n")
    live_kernel.run(LOAD)
    for code in [*PAGED, f"%less {text}"]:
        local = live_kernel.run(code)
        remote = live_kernel.run("%%gpu\n" + code)
        payload = local.reply["content"]["payload"]
        assert payload and payload[0]["source"] == "page", (code, payload)
        assert remote.reply["content"]["payload"] == payload, code
        assert remote.stdout() == local.stdout() == "", code
    quickref = live_kernel.run("%%gpu\n%quickref")  # its list of magics is the worker's (test below)
    [page] = quickref.reply["content"]["payload"]
    assert "Quick Reference Card" in page["data"]["text/plain"] and quickref.stdout() == ""


@pytest.mark.timeout(300)
def test_lsmagic_lists_the_magics_that_work_and_a_kernel_only_one_says_where_it_runs(live_kernel):
    import re

    def magics(cell):
        [shown] = [e.msg["content"]["data"]["text/plain"] for e in cell.iopub if e.msg["msg_type"] == "execute_result"]
        return set(re.findall(r"%%?\w+", shown))

    live_kernel.run(LOAD)
    local, remote = magics(live_kernel.run("%lsmagic")), magics(live_kernel.run("%%gpu\n%lsmagic"))
    # the kernel's own (ipykernel's, ours) except those about the kernel itself work on the worker too
    assert {"%autosave", "%clear", "%less", "%more", "%man", "%store"} <= remote
    assert local - remote == {"%connect_info", "%qtconsole", "%subshell", "%gpu", "%%gpu"}
    assert remote <= local
    cell = live_kernel.run("%%gpu\n%connect_info", ok=False)
    reply = cell.reply["content"]
    assert reply["status"] == "error" and reply["ename"] == "UsageError"
    [said] = [e.msg["content"]["text"] for e in cell.streams("stderr")]  # once, by the kernel
    assert "run it in a cell without %%gpu" in said


@pytest.mark.timeout(300)
def test_a_value_the_worker_could_not_unpickle_fails_its_cells_with_their_own_errors(run_notebook, tmp_path):
    """A module beside the notebook that the worker cannot import (it runs in another directory,
    or, as here, the file is gone): a value of it fails to unpickle there (SerializationError),
    and the cells after it end with their own errors.  The kernel counted the value the worker
    never loaded as held there: the next cell that read it was sent as `keep`, the worker answered
    `resend` on its lane, and the kernel failed with an internal AttributeError ('NoneType' object
    has no attribute 'done'); then it went again through the backend, one round trip more."""
    from .helpers import footer_json, is_footer

    (tmp_path / "mod_beside_notebook.py").write_text("X = 10\n")
    failing = "%%gpu\ny = f(3) + p.v + mod_beside_notebook.X"
    nb = run_notebook([
        LOAD,
        "def f(x): return x*2",
        "class P:\n def __init__(self, v): self.v = v",
        "p = P(5)",
        "import mod_beside_notebook, os, shutil\nos.remove('mod_beside_notebook.py')\n"
        "shutil.rmtree('__pycache__', ignore_errors=True)",  # however the worker was started
        "%%gpu\ny = f(3) + p.v",
        failing,
        failing,  # reads it again
        "%%gpu\nimport mod_beside_notebook",
        "%%gpu\nprint(y, f(4) + p.v)",
    ], allow_errors=True)
    errors = [[(o["ename"], o["evalue"]) for o in c["outputs"] if o["output_type"] == "error"] for c in nb.cells]
    assert errors[5] == [] and errors[9] == [], errors
    for i in (6, 7):
        [(ename, evalue)] = errors[i]
        assert ename == "SerializationError" and "mod_beside_notebook" in evalue, errors[i]
    assert errors[8] == [("ModuleNotFoundError", "No module named 'mod_beside_notebook'")], errors[8]
    assert stream_text(nb.cells[9]) == "11 13\n"  # the worker and the namespace are intact
    rerun = [footer_json(o) for o in nb.cells[7]["outputs"] if is_footer(o)]
    assert rerun and rerun[-1]["route"] == "lane", rerun  # sent once, straight to its worker: no resend
