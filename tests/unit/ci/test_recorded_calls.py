"""A spawned call's id copied into its cell's metadata (jupyter_gpu.calls) by `jupyter-gpu run`, with
the lab extension's rules (labextension/src/calls.ts): no id twice, other keys kept, bad ids refused."""
from __future__ import annotations

import nbformat

from jupyter_gpu.functions import recorded
from jupyter_gpu.functions.jobs import MIME


def _spawned(cid, name="train", created=1796515200.5):
    return nbformat.v4.new_output("display_data", data={
        MIME: {"id": cid, "function": name, "created": created}, "text/plain": f"spawned {name} -> FunctionCall {cid}"})


def test_each_cells_calls_go_into_its_metadata_once_in_order_keeping_its_other_keys():
    nb = nbformat.v4.new_notebook()
    a = nbformat.v4.new_code_cell("fc = f.spawn(1)")
    a.outputs = [_spawned("fc-aa"), nbformat.v4.new_output("stream", text="10\n"), _spawned("fc-bb", "g", None)]
    a.metadata["jupyter_gpu"] = {"note": "kept", "calls": [{"id": "fc-old", "function": "f", "created": 1.0}]}
    b = nbformat.v4.new_code_cell("print(1)")
    b.outputs = [nbformat.v4.new_output("stream", text="1\n")]
    nb.cells = [a, nbformat.v4.new_markdown_cell("text"), b]
    assert recorded.record_calls(nb) == 2
    assert a.metadata["jupyter_gpu"] == {"note": "kept", "calls": [
        {"id": "fc-old", "function": "f", "created": 1.0},
        {"id": "fc-aa", "function": "train", "created": 1796515200.5},
        {"id": "fc-bb", "function": "g", "created": None}]}
    assert "jupyter_gpu" not in b.metadata and "jupyter_gpu" not in nb.cells[1].metadata
    assert recorded.record_calls(nb) == 0  # run again (a notebook executed twice): nothing twice
    nbformat.validate(nb)


def test_what_is_not_a_call_id_is_not_recorded():
    nb = nbformat.v4.new_notebook()
    c = nbformat.v4.new_code_cell("x")
    c.outputs = [_spawned("fc-1'); import os; ('"), _spawned("not-an-id"),
                 nbformat.v4.new_output("display_data", data={MIME: "not json"})]
    c.metadata["jupyter_gpu"] = {"calls": [{"id": "bad id"}, "x"]}  # hand-edited: left as it was
    nb.cells = [c]
    assert recorded.record_calls(nb) == 0
    assert c.metadata["jupyter_gpu"] == {"calls": [{"id": "bad id"}, "x"]}


def test_a_cell_keeps_its_newest_calls():
    nb = nbformat.v4.new_notebook()
    c = nbformat.v4.new_code_cell("for i in range(n): f.spawn(i)")
    c.outputs = [_spawned(f"fc-{i}") for i in range(recorded.MAX_CALLS + 3)]
    nb.cells = [c]
    recorded.record_calls(nb)
    ids = [x["id"] for x in c.metadata["jupyter_gpu"]["calls"]]
    assert len(ids) == recorded.MAX_CALLS and ids[0] == "fc-3" and ids[-1] == f"fc-{recorded.MAX_CALLS + 2}"
