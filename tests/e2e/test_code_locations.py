"""A `%%gpu` cell's code says where it is as the same local cell's does: line numbers counted from
the body's first line, ipykernel's cell file names, source kept for ``inspect`` and pdb (also once
a function crossed to the kernel and back), the notebook's input history, and ``%debug``.

"The same local cell" is a local cell with the same body (without the `%%gpu` line), run in the
same kernel: tracebacks are compared whole, apart from the remote one's first line (which names
the worker) and the cell's number.
"""
from __future__ import annotations

import re
import uuid

import pytest

from .helpers import LOAD, error_output, stream_text, strip_ansi, traceback_text

_IN = re.compile(r"In\[\d+\]")


def _tb(cell) -> str:
    lines = traceback_text(error_output(cell)).splitlines()
    if lines and lines[0].startswith("Remote traceback on worker"):
        lines = lines[1:]
    return _IN.sub("In[N]", "\n".join(lines))


TRACEBACK_BODIES = [
    "def g(x):\n    y = x + 1\n    return y / 0\n\n\ng(1)",  # the error on line 3, called from line 6
    "x = 1\ny = (",  # a SyntaxError
    "x = 1\nif x:\nprint(x)",  # an IndentationError (a SyntaxError's subclass)
    "\n\nx = 1\n1 / 0",  # leading blank lines: IPython drops them, locally too
]


@pytest.mark.timeout(300)
def test_line_numbers_file_names_and_tracebacks_are_the_local_cells(run_notebook):
    lineno = "import inspect\nx = 1\nprint(inspect.currentframe().f_lineno)"
    sources = [LOAD, lineno, "%%gpu\n" + lineno]
    for body in TRACEBACK_BODIES:
        sources += [body, "%%gpu\n" + body]
    nb = run_notebook(sources, allow_errors=True)
    cells = nb.cells
    # the body's third line is line 3, as in a local cell with that body (not 4, the `%%gpu` line counted)
    assert stream_text(cells[1]) == stream_text(cells[2]) == "3\n"
    for k in range(len(TRACEBACK_BODIES)):
        local, remote = cells[3 + 2 * k], cells[4 + 2 * k]
        assert _tb(remote) == _tb(local), f"{local['source']!r}:\n{_tb(local)}\n--- %%gpu:\n{_tb(remote)}"
        assert error_output(remote)["evalue"] == error_output(local)["evalue"]  # SyntaxError: file name, line
    tb = _tb(cells[4])
    assert "Cell In[N], line 6\n" in tb and "Cell In[N], line 3, in g(x)" in tb and "----> 3     return y / 0" in tb
    syntax = error_output(cells[6])
    assert syntax["ename"] == "SyntaxError" and re.fullmatch(r"incomplete input \(\d+\.py, line 2\)", syntax["evalue"])
    assert "jupyter_gpu" not in _tb(cells[6])  # the kernel's own frames are not the cell's


@pytest.mark.timeout(300)
def test_functions_from_gpu_cells_keep_their_source_here_and_there(run_notebook):
    body = "def g(x):\n    y = x + 1\n    return y / 0"
    nb = run_notebook([
        LOAD,
        "%%gpu\n" + body,
        "%%gpu\nimport inspect\nprint(inspect.getsource(g), end='')",  # a later cell on the worker
        "import inspect\nprint(inspect.getsource(g), end='')\nprint(g.__code__.co_filename)",  # came back here
        "g(1)",  # called here: its frame says where it was defined
        "%%gpu\ng(1)",
        body,  # the same text as a local cell: the same file name, as ipykernel names cells
        "print(g.__code__.co_filename)",
    ], allow_errors=True)
    cells = nb.cells
    assert stream_text(cells[2]) == body + "\n"
    source, file = stream_text(cells[3]).rsplit("\n", 2)[:2]
    assert source + "\n" == body + "\n" and re.search(r"ipykernel_\d+/\d+\.py$", file), stream_text(cells[3])
    assert stream_text(cells[7]) == file + "\n"
    for caller in (cells[4], cells[5]):
        tb = traceback_text(error_output(caller))
        assert "Cell In[2], line 3, in g(x)" in tb and "----> 3     return y / 0" in tb, tb


HISTORY = ("print(repr(_i), repr(_ii), repr(_iii))\nprint(In[-2], In[-3], len(In), _ih is In)\nprint(_i2, _i3)\n"
           "%history -n -l 3\n%history -n 2-3\n%history -g {token}")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("warm", [False, True], ids=["cold", "sent-on-arrival"])
def test_the_input_history_is_the_notebooks(run_notebook, warm):
    # the same notebook twice, but for its last cell: local, then `%%gpu`; the same cells before it
    # (a %%gpu cell among them; with a warm worker the last is sent as its request arrives, before
    # the kernel stored it in its history)
    # (%history -g searches every session's history: a token only these notebooks have, the local first)
    token = f"token_{uuid.uuid4().hex}"
    before = [LOAD, f"{token} = 1", "%%gpu\nwarm = 2" if warm else "%time b = 2", "%%capture\nx = 3"]
    check = "from jupyter_gpu.notebook import extension\nprint(extension.magics.session.sent_on_arrival)"
    history = HISTORY.format(token=f"{token}[ ]=")  # a glob that does not match this cell's own text
    local = run_notebook([*before, history])
    remote = run_notebook([*before, "%%gpu\n" + history, check])
    assert stream_text(remote.cells[-2]) == stream_text(local.cells[-1])
    assert f"{token} = 1" in stream_text(local.cells[-1])  # it printed the history
    assert stream_text(remote.cells[-1]) == ("1\n" if warm else "0\n")


def _answer(k, cell, value: str, timeout: float = 60) -> dict:
    asked = len(cell.input_requests())
    assert k.wait_until(lambda: len(cell.input_requests()) > asked or cell.done, timeout), "never asked"
    assert not cell.done, f"the cell ended without asking: {cell.stdout()!r} {cell.errors()}"
    k.answer(value)
    return cell.input_requests()[-1]


def _stderr(cell) -> str:
    return "".join(e.msg["content"]["text"] for e in cell.streams("stderr"))


@pytest.mark.timeout(300)
def test_debug_after_a_gpu_cells_error_debugs_its_frames_on_the_worker(live_kernel):
    k = live_kernel
    k.run(LOAD)
    failed = k.run("%%gpu\ndef g(x):\n    y = x + 1\n    return y / 0\n\ng(41)", ok=False)
    assert failed.reply["content"]["ename"] == "ZeroDivisionError"
    for code in ("%debug", "%%gpu\n%debug"):  # in the kernel, and in a %%gpu cell
        cell = k.submit(code, allow_stdin=True)
        assert _answer(k, cell, "p y")["prompt"] == "ipdb> "
        _answer(k, cell, "q")
        assert k.wait_until(lambda: cell.done, 60)
        out = strip_ansi(cell.stdout())
        assert "----> 3     return y / 0" in out and "\n42\n" in out, out  # the cell's frame, its source listed
        assert re.search(r"ipykernel_\d+/\d+\.py\(3\)g\(\)", out), out  # named as a local cell's
        assert "jupyter_gpu" not in out  # not this extension's frames
        if code == "%debug":  # it says where the frames are
            assert "frames of the last error are on worker w-" in _stderr(cell), _stderr(cell)
    k.run("%pdb on")  # the automatic post-mortem, too
    auto = k.submit("%%gpu\nz = 5\nraise KeyError(z)", allow_stdin=True)
    assert _answer(k, auto, "p z")["prompt"] == "ipdb> "
    _answer(k, auto, "q")
    assert k.wait_until(lambda: auto.done, 60)
    assert "\n5\n" in strip_ansi(auto.stdout()) and "jupyter_gpu" not in strip_ansi(auto.stdout())
    k.run("%pdb off")
    k.run("%gpu release")
    gone = k.run("%debug")
    assert "which is gone" in _stderr(gone) and not gone.input_requests()
    k.run("1 / 0", ok=False)  # a local error: IPython's own %debug
    local = k.submit("%debug", allow_stdin=True)
    assert _answer(k, local, "q")["prompt"] == "ipdb> "
    assert k.wait_until(lambda: local.done, 60)
    assert "----> 1 1 / 0" in strip_ansi(local.stdout())
