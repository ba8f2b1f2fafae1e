"""Widgets and comms of a `%%gpu` cell work as a local cell's, checked on the kernel's own messages
(the browser test, tests/browser, checks what a person sees in JupyterLab).

Each test does the same thing from a local cell and from a `%%gpu` cell in one kernel, and acts as a
frontend does: it sends comm messages on the shell channel (a slider moved, a button pressed) and
reads what the kernel publishes under them.
"""
from __future__ import annotations

import pytest

from .helpers import LOAD, stream_text, user_outputs

pytestmark = pytest.mark.timeout(240)


def _iopub(cell, msg_type: str) -> list:
    return [e.msg["content"] for e in cell.iopub if e.msg["msg_type"] == msg_type]


def _models(cell) -> dict:
    """model name -> comm id of the widgets a cell opened."""
    return {c["data"]["state"]["_model_name"]: c["comm_id"] for c in _iopub(cell, "comm_open")}


def _streamed(cell) -> str:
    return "".join(c["text"] for c in _iopub(cell, "stream") if c["name"] == "stdout")


def _move(live, comm_id: str, **state):
    """The frontend sets a widget's state (a slider dragged), and the kernel handles it."""
    cell = live.comm_send(comm_id, {"method": "update", "state": state, "buffer_paths": []})
    assert live.wait_until(lambda: cell.idle, 60), "the kernel never went idle after the comm message"
    return cell


@pytest.mark.parametrize("where", ["", "%%gpu\n"])
def test_a_slider_opens_its_comms_and_its_observer_runs_when_the_frontend_moves_it(live_kernel, where):
    live = live_kernel
    live.run(LOAD)
    made = live.run(where + "import ipywidgets as W\ns = W.IntSlider(value=3)\n"
                            "s.observe(lambda ch: print('moved to', ch['new']), names='value')\ns")
    models = _models(made)
    # what a local cell opens: the slider, its layout and its style (a model JupyterLab can show)
    assert set(models) == {"LayoutModel", "SliderStyleModel", "IntSliderModel"}, models
    view = [c["data"] for c in _iopub(made, "execute_result")]
    assert view and view[0]["application/vnd.jupyter.widget-view+json"]["model_id"] == models["IntSliderModel"]
    moved = _move(live, models["IntSliderModel"], value=7)
    echoed = [c["data"] for c in _iopub(moved, "comm_msg")]
    assert {"method": "echo_update", "state": {"value": 7}, "buffer_paths": []} in echoed
    assert _streamed(moved) == "moved to 7\n"
    assert all(e.msg["parent_header"]["msg_id"] == moved.msg_id for e in moved.iopub)
    after = live.run(where + "print(s.value)")
    assert after.stdout() == "7\n"


@pytest.mark.parametrize("where", ["", "%%gpu\n"])
def test_a_button_press_runs_its_handler_and_a_failing_handler_shows_its_traceback(live_kernel, where):
    live = live_kernel
    live.run(LOAD)
    made = live.run(where + "import ipywidgets as W\nb = W.Button(description='go')\npresses = []\n"
                            "def on(btn):\n    presses.append(1)\n    print('pressed', len(presses))\n"
                            "    if len(presses) == 2:\n        raise ValueError('second press')\n"
                            "b.on_click(on)\nb")
    button = _models(made)["ButtonModel"]
    for n in (1, 2):
        pressed = live.comm_send(button, {"method": "custom", "content": {"event": "click"}})
        assert live.wait_until(lambda: pressed.idle, 60)
        assert _streamed(pressed) == f"pressed {n}\n"
    errors = _iopub(pressed, "error")
    assert [e["ename"] for e in errors] == ["ValueError"] and errors[0]["evalue"] == "second press"
    after = live.run(where + "print(len(presses))")  # the kernel keeps serving, the handler's state too
    assert after.stdout() == "2\n"


@pytest.mark.parametrize("where", ["", "%%gpu\n"])
def test_an_output_widget_captures_under_the_cells_own_message(live_kernel, where):
    """ipywidgets' Output captures what is published under the message its msg_id names: the
    cell's execute_request in the cell, the frontend's comm message in a handler (interact)."""
    live = live_kernel
    live.run(LOAD)
    cell = live.run(where + "import ipywidgets as W\nout = W.Output()\ndisplay(out)\n"
                            "with out:\n    print('inside')\n    1 / 0\nprint('after')")
    out_id = _models(cell)["OutputModel"]
    states = [c["data"]["state"] for c in _iopub(cell, "comm_msg") if c["comm_id"] == out_id]
    assert {"msg_id": cell.msg_id} in states and states[-1] == {"msg_id": ""}, states
    kinds = [(e.msg["msg_type"], e.msg["content"].get("text") or e.msg["content"].get("ename"))
             for e in cell.iopub if e.msg["msg_type"] in ("stream", "error")]
    assert kinds[:3] == [("stream", "inside\n"), ("error", "ZeroDivisionError"), ("stream", "after\n")], kinds
    assert cell.reply["content"]["status"] == "ok"  # the Output widget took the error, as locally


@pytest.mark.parametrize("where", ["", "%%gpu\n"])
def test_interact_shows_its_result_and_updates_it_when_the_frontend_changes_its_control(live_kernel, where):
    live = live_kernel
    live.run(LOAD)
    cell = live.run(where + "from ipywidgets import interact\n@interact(x=3)\ndef double(x):\n    print(x * 2)")
    models = _models(cell)
    assert "IntSliderModel" in models and "OutputModel" in models, models
    assert _streamed(cell) == "6\n"
    moved = _move(live, models["IntSliderModel"], value=7)
    out_states = [c["data"]["state"] for c in _iopub(moved, "comm_msg") if c["comm_id"] == models["OutputModel"]]
    assert {"msg_id": moved.msg_id} in out_states  # captured into interact's output area
    assert _streamed(moved) == "14\n"


@pytest.mark.parametrize("where", ["", "%%gpu\n"])
def test_tqdm_auto_shows_the_widget_bar(live_kernel, where):
    live = live_kernel
    live.run(LOAD)
    cell = live.run(where + "from tqdm.auto import tqdm\nfor i in tqdm(range(200)):\n    pass")
    models = _models(cell)
    assert "FloatProgressModel" in models, models
    bar = models["FloatProgressModel"]
    values = [c["data"]["state"]["value"] for c in _iopub(cell, "comm_msg")
              if c["comm_id"] == bar and "value" in c["data"].get("state", {})]
    assert values and values[-1] == 200, values
    assert not [c for c in _iopub(cell, "stream") if c["name"] == "stderr"]  # no text bar


def test_the_kernel_object_on_the_worker_sends_to_the_notebook_under_the_cell(live_kernel):
    live = live_kernel
    live.run(LOAD)
    code = ("ip = get_ipython()\nk = ip.kernel\n"
            "k.session.send(k.iopub_socket, 'display_data', {'data': {'text/plain': 'sent by hand'}, "
            "'metadata': {}}, parent=k.get_parent())\nprint(k.get_parent()['header']['msg_type'])")
    remote, local = live.run("%%gpu\n" + code), live.run(code)
    for cell in (local, remote):
        shown = [c["data"] for c in _iopub(cell, "display_data") if "sent by hand" in str(c["data"])]
        assert shown == [{"text/plain": "sent by hand"}]
        assert cell.stdout() == "execute_request\n"


def test_widgets_of_a_released_worker_are_closed_in_the_frontend_with_a_message(live_kernel):
    live = live_kernel
    live.run(LOAD)
    made = live.run("%%gpu\nimport ipywidgets as W\ns = W.IntSlider()\ns")
    slider = _models(made)["IntSliderModel"]
    released = live.run("%gpu release")
    closed = [c["comm_id"] for c in _iopub(released, "comm_close")]
    assert slider in closed
    assert "widget comm(s) of worker" in "".join(c["text"] for c in _iopub(released, "stream"))
    moved = _move(live, slider, value=5)  # a stale view: nothing runs, nothing breaks
    assert not _iopub(moved, "error")
    assert live.run("%%gpu\nprint('still serving')").stdout() == "still serving\n"


def test_widget_state_is_saved_into_the_notebook_as_for_a_local_widget(run_notebook):
    nb = run_notebook([LOAD, "import ipywidgets as W\nW.IntSlider(value=4, description='local')",
                       "%%gpu\nimport ipywidgets as W\nW.IntSlider(value=5, description='remote')"])
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    sliders = {m["state"]["description"]: m["state"]["value"] for m in state.values()
               if m["model_name"] == "IntSliderModel"}
    assert sliders == {"local": 4, "remote": 5}
    for cell in nb.cells[1:]:
        views = [o for o in user_outputs(cell) if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert len(views) == 1 and views[0]["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] in state
    assert stream_text(nb.cells[2], "stderr") == ""


def _capture_trace(cell) -> list:
    """What a frontend's Output widgets see: each capture switch, clear and print, in order."""
    names = {c["comm_id"]: c["data"]["state"].get("description") or c["data"]["state"]["_model_name"]
             for c in _iopub(cell, "comm_open")}
    trace = []
    for e in cell.iopub:
        m, c = e.msg["msg_type"], e.msg["content"]
        if m == "comm_msg" and "msg_id" in c["data"].get("state", {}):
            trace.append(("capture", names.get(c["comm_id"]), bool(c["data"]["state"]["msg_id"])))
        elif m == "clear_output":
            trace.append(("clear", c["wait"]))
        elif m == "stream":
            trace.append(("print", c["text"]))
    return trace


def test_nested_output_captures_and_clears_inside_them_as_locally(live_kernel):
    live = live_kernel
    live.run(LOAD)
    code = ("import ipywidgets as W\nfrom IPython.display import clear_output\n"
            "outer, inner = W.Output(layout={'border': '1px solid'}), W.Output()\n"
            "with outer:\n    print('outer 1')\n    with inner:\n        print('inner 1')\n"
            "        clear_output(wait=True)\n        print('inner 2')\n    print('outer 2')\nprint('cell')")
    local, remote = live.run(code), live.run("%%gpu\n" + code)
    assert _capture_trace(remote) == _capture_trace(local)
    assert ("print", "inner 2\n") in _capture_trace(remote)


def test_many_interact_cells_leave_no_errors_behind(live_kernel):
    """Widgets made and dropped again and again on the worker close cleanly (their comms were
    dummies once, whose __del__ printed KeyError into later cells)."""
    live = live_kernel
    live.run(LOAD)
    for i in range(6):
        cell = live.run(f"%%gpu\nfrom ipywidgets import interact\nw = interact(lambda x: x + {i}, x=3)")
        assert not [c for c in _iopub(cell, "stream") if c["name"] == "stderr"], _iopub(cell, "stream")
    after = live.run("%%gpu\nimport gc\ngc.collect()\nprint('clean')")
    assert after.stdout() == "clean\n"
    assert not [c for c in _iopub(after, "stream") if c["name"] == "stderr"], _iopub(after, "stream")


@pytest.mark.parametrize("where", ["", "%%gpu\n"])
def test_the_frontend_closing_a_comm_closes_it_where_it_lives(live_kernel, where):
    live = live_kernel
    live.run(LOAD)
    made = live.run(where + "import ipywidgets as W, comm\ns = W.IntSlider()\nclosed = []\n"
                            "s.comm.on_close(lambda msg: closed.append(msg['content']['comm_id']))\ns")
    slider = _models(made)["IntSliderModel"]
    gone = live.comm_send(slider, {}, msg_type="comm_close")
    assert live.wait_until(lambda: gone.idle, 60)
    after = live.run(where + "print(closed == [s.comm.comm_id], s.comm.comm_id in comm.get_comm_manager().comms)")
    assert after.stdout() == "True False\n"
