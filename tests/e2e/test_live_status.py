"""The live status line of a `%%gpu` cell that runs a while: never left in a saved notebook, and
never updated after a clear_output took it away (the update would overwrite what the frontend put
in its place: interact's widget on a cold start, say)."""
from __future__ import annotations

import json

import pytest

from jupyter_gpu.cost import saved

from .helpers import FOOTER_MIME, LOAD
from .run_cli import CLI

pytestmark = pytest.mark.timeout(240)

CLEARS = ("%%gpu\nimport time\nfrom IPython.display import clear_output\nprint('first')\ntime.sleep(1.2)\n"
          "clear_output()\nprint('second')\ntime.sleep(1.2)")


def _live_ids(msg) -> str | None:
    content = msg["content"]
    display_id = (content.get("transient") or {}).get("display_id", "")
    if "-live-" in display_id:
        return display_id
    return None


def test_a_clear_output_takes_the_line_and_a_new_one_follows_at_the_end(live_kernel):
    live = live_kernel
    live.run(LOAD)
    cell = live.run(CLEARS)
    shown_before_clear, cleared = set(), False
    for e in cell.iopub:
        m = e.msg
        if m["msg_type"] == "clear_output":
            cleared = True
        display_id = _live_ids(m) if m["msg_type"] in ("display_data", "update_display_data") else None
        if display_id is None:
            continue
        if not cleared:
            shown_before_clear.add(display_id)
        else:
            assert display_id not in shown_before_clear, "a live line the clear took away was updated after it"
    assert shown_before_clear, "the cell ran 2.4 s and never showed its live status"
    assert cleared
    assert any(_live_ids(e.msg) and e.msg["msg_type"] == "display_data"
               for e in cell.iopub[[e.msg["msg_type"] for e in cell.iopub].index("clear_output"):]), \
        "no live status after the clear"
    assert cell.stdout() == "first\nsecond\n"


def test_the_saved_notebook_has_the_cells_own_outputs_and_its_footer(tmp_path, kernel_env):
    """`jupyter-gpu run` saves what the lab saves: no emptied live status line."""
    import nbformat
    import subprocess

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(s) for s in (LOAD, "%%gpu\nimport time\ntime.sleep(1.2)\nprint('done')")]
    path = tmp_path / "slow.ipynb"
    nbformat.write(nb, path)
    out = tmp_path / "out"
    r = subprocess.run([CLI, "run", str(path), "--output", str(out)],
                       env=kernel_env, capture_output=True, text=True, timeout=200)
    assert r.returncode == 0, r.stdout + r.stderr
    cell = json.loads((out / "slow.ipynb").read_text())["cells"][1]
    kinds = [(o["output_type"], sorted(o.get("data", {}))) for o in cell["outputs"]]
    assert kinds[0] == ("stream", []) and FOOTER_MIME in kinds[1][1] and len(kinds) == 2, kinds


def test_dropping_emptied_lines_keeps_every_other_output():
    nb = {"cells": [{"outputs": [
        {"output_type": "display_data", "data": {}, "metadata": dict(saved.EMPTIED)},
        {"output_type": "display_data", "data": {}, "metadata": {}},  # a user's own empty display stays
        {"output_type": "stream", "name": "stdout", "text": "x"},
    ]}, {"cell_type": "markdown"}]}
    assert saved.drop_emptied_live(nb) == 1
    assert [o["output_type"] for o in nb["cells"][0]["outputs"]] == ["display_data", "stream"]
    assert nb["cells"][0]["outputs"][0]["metadata"] == {}
