"""input() and getpass() in a %%gpu cell ask the notebook's user, as in a local cell.

A real kernel driven by jupyter_client that answers its input_request like a frontend's input box,
a real backend and a real worker; the first cell of a lease is relayed by the backend, later ones
take the worker's lane, and both must ask the same way.
"""
from __future__ import annotations

import pytest

from .helpers import LOAD, error_output


def _answer(k, cell, value: str, timeout: float = 60) -> dict:
    asked = len(cell.input_requests())
    assert k.wait_until(lambda: len(cell.input_requests()) > asked or cell.done, timeout), "never asked"
    assert not cell.done, f"the cell ended without asking: {cell.stdout()!r} {cell.errors()}"
    request = cell.input_requests()[-1]
    k.answer(value)
    return request


@pytest.mark.timeout(180)
def test_input_and_getpass_ask_the_user_relayed_and_by_the_lane(live_kernel):
    k = live_kernel
    k.run(LOAD)
    cell = k.submit("%%gpu\nprint('before', flush=True)\nname = input('name? ')\nprint('hello', name)",
                    allow_stdin=True)
    request = _answer(k, cell, "Ada")
    assert request == {"prompt": "name? ", "password": False}
    assert k.wait_until(lambda: cell.done, 60)
    assert cell.reply["content"]["status"] == "ok", cell.errors()
    assert cell.stdout() == "before\nhello Ada\n"  # what was printed before the question came first
    assert cell.footers()[-1]["route"] == "backend"
    assert k.run("print(repr(name))").stdout() == "'Ada'\n"  # the answer came back as a name

    warm = k.submit("%%gpu\nimport getpass\nsecret = getpass.getpass()\nn = input()\nprint(len(secret), n)",
                    allow_stdin=True)
    assert _answer(k, warm, "s3cret") == {"prompt": "Password: ", "password": True}
    assert _answer(k, warm, "7") == {"prompt": "", "password": False}
    assert k.wait_until(lambda: warm.done, 60)
    assert warm.reply["content"]["status"] == "ok", warm.errors()
    assert warm.stdout() == "6 7\n" and warm.footers()[-1]["route"] == "lane"


@pytest.mark.timeout(180)
def test_the_stop_button_while_the_user_is_asked_interrupts_the_cell_only(live_kernel):
    k = live_kernel
    k.run(LOAD)
    k.run("%%gpu\nkept = 41")
    cell = k.submit("%%gpu\nanswer = input('wait for me: ')", allow_stdin=True)
    assert k.wait_until(lambda: bool(cell.input_requests()) or cell.done, 60) and not cell.done
    k.interrupt()
    assert k.wait_until(lambda: cell.done, 30), "the interrupted cell never ended"
    assert cell.reply["content"]["status"] == "error"
    assert cell.reply["content"]["ename"] == "KeyboardInterrupt", cell.reply["content"]
    after = k.run("%%gpu\nprint(kept + 1)")  # the worker stayed warm, its namespace intact
    assert after.stdout() == "42\n" and after.footers()[-1]["cold"] is False


@pytest.mark.timeout(180)
def test_without_an_input_box_input_fails_as_in_a_local_cell(run_notebook):
    # nbclient, like papermill, takes no input: a local cell raises StdinNotImplementedError
    nb = run_notebook([LOAD, "%%gpu\nx = input('x? ')", "y = input('y? ')"], allow_errors=True)
    remote, local = error_output(nb.cells[1]), error_output(nb.cells[2])
    assert remote["ename"] == local["ename"] == "StdinNotImplementedError"
    assert remote["evalue"] == local["evalue"]


@pytest.mark.timeout(180)
def test_breakpoint_in_a_gpu_cell_takes_debugger_commands_from_the_user(live_kernel):
    k = live_kernel
    k.run(LOAD)
    cell = k.submit("%%gpu\nx = 20\nbreakpoint()\ny = x + 22", allow_stdin=True)
    assert _answer(k, cell, "p x * 2")["prompt"] == "(Pdb) "
    _answer(k, cell, "c")
    assert k.wait_until(lambda: cell.done, 60)
    assert cell.reply["content"]["status"] == "ok", cell.errors()
    assert "40" in cell.stdout()  # the debugger printed `p x * 2` in the cell's output
    assert k.run("print(y)").stdout() == "42\n"
