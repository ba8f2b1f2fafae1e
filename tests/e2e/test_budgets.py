"""Budgets with real parts: `%%gpu --max-cost` stops a running cell; a backend started with
--session-budget/--user-budget refuses a cell before it starts, with the figure and the limit, and
the session stays usable.  Prices: a team file that prices the cpu device at $0.001/s."""
from __future__ import annotations

import json

import pytest

from tests.e2e.helpers import LOAD, error_output, last_footer, stream_text, traceback_text
from tests.integration.backend_process import start_backend, stop_backend

PRICES = """
[[serverless]]
gpu = "cpu"
provider = "test"
per_s = 0.001
as_of = "2026-11-29"
source = "https://example.org/a-test-price"
profile = "modal"
"""


@pytest.fixture
def priced(tmp_path):
    p = tmp_path / "prices.toml"
    p.write_text(PRICES)
    return str(p)


def test_max_cost_stops_a_running_cell_and_the_session_goes_on(run_notebook, kernel_env, priced):
    nb = run_notebook([
        LOAD,
        "%%gpu\npass",  # a warm worker: the limit stops the running cell, not its cold start (a loaded machine's can pass 0.5 s)
        "%%gpu --max-cost 0.0005\nimport time\nfor i in range(600):\n    time.sleep(0.1)",
        '%%gpu\nprint("still here")',
    ], env={**kernel_env, "JUPYTER_GPU_PRICES": priced}, allow_errors=True)
    stopped = nb.cells[2]
    assert "past --max-cost $0.0005 (test $0.001000/s, 2026-11-29)" in stream_text(stopped, "stderr")
    assert error_output(stopped)["ename"] == "KeyboardInterrupt"
    f = last_footer(stopped)
    assert f["status"] == "interrupted"
    # stopped soon after the limit: 0.5 s billed, not the 60 s the loop would take
    assert 0.0005 <= f["cost_usd"] < 0.0005 + 0.001 * 5
    assert "still here" in stream_text(nb.cells[3])
    assert last_footer(nb.cells[3])["worker"] == f["worker"]  # interrupted, not killed: still warm


def test_backend_budgets_refuse_before_start_and_warn(run_notebook, kernel_env, priced, tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_GPU_PRICES", priced)  # the backend's catalog prices what it charges
    proc, url = start_backend(tmp_path, "--session-budget", "0.004", "--user-budget", "0.004",
                              "--budget-warn", "0.1")
    try:
        token = json.loads((tmp_path / "backend.json").read_text())["token"]
        env = {**kernel_env, "JUPYTER_GPU_URL": url, "JUPYTER_GPU_TOKEN": token, "JUPYTER_GPU_PRICES": priced}
        nb = run_notebook([
            LOAD,
            "%%gpu\nimport time\ntime.sleep(0.5)",  # >= $0.0005: past 10% of $0.004
            "%%gpu\ntime.sleep(4)",  # runs, with a warning; afterwards >= $0.0045 spent
            "%%gpu\nx = 1",  # refused before it starts
            "y = 2\nprint(y)",
            "%gpu status",
        ], env=env, allow_errors=True)
        assert "budget warning" not in stream_text(nb.cells[1], "stderr")
        warned = stream_text(nb.cells[2], "stderr")
        assert "jupyter-gpu: budget warning: this session has spent $" in warned and "of its $0.004 session budget" in warned
        err = error_output(nb.cells[3])
        assert err["ename"] == "BudgetExceeded"
        text = traceback_text(err)
        assert "session budget reached: this session has spent $0.00" in text and "of $0.004" in text
        assert "not started" in text
        assert not [o for o in nb.cells[3]["outputs"] if o.get("output_type") == "stream"]  # nothing ran
        assert stream_text(nb.cells[4]) == "2\n"  # the session is still usable
        assert "runtime: local" in stream_text(nb.cells[5])
        # the figure is the footers' billed cost, to the micro-dollar, less the keep-warm idle the
        # second footer includes (budgets charge cells, not idle: backend/.../budgets.py)
        f1, f2 = last_footer(nb.cells[1]), last_footer(nb.cells[2])
        spent = f1["cost_usd"] + f2["cost_usd"] - f2["keep_warm_idle_s"] * f2["price"]["serverless_per_s"]
        assert f2["keep_warm_idle_s"] > 0
        assert f"${spent:.6f}" in text
        # another kernel of the same user: its own session is empty, the user's budget is not
        nb2 = run_notebook([LOAD, "%%gpu\nx = 1", "print('local ok')"], env=env, allow_errors=True)
        text2 = traceback_text(error_output(nb2.cells[1]))
        assert "user budget reached: user local has spent $" in text2 and "of $0.004" in text2
        assert stream_text(nb2.cells[2]) == "local ok\n"
    finally:
        stop_backend(proc)


@pytest.mark.timeout(180)
def test_timeout_and_max_cost_still_stop_a_cell_that_waits_on_input(kernel_env, priced):
    """A cell waiting for an answer nobody gives is still billed: its --timeout and --max-cost
    withdraw the question and stop it as the stop button would, and the worker stays warm."""
    from tests.conftest import LiveKernel

    k = LiveKernel({**kernel_env, "JUPYTER_GPU_PRICES": priced})
    try:
        k.run(LOAD)
        k.run("%%gpu\nkept = 41")
        answered = k.submit("%%gpu --timeout 60 --max-cost 1\nanswer = input('name? ')", allow_stdin=True)
        assert k.wait_until(lambda: bool(answered.input_requests()) or answered.done, 60) and not answered.done
        k.answer("Ada")  # in time: nothing is withdrawn
        assert k.wait_until(lambda: answered.done, 60)
        assert answered.reply["content"]["status"] == "ok", answered.errors()
        for line in ("--timeout 2", "--max-cost 0.002"):  # $0.001/s: 2 s either way
            cell = k.submit(f"%%gpu {line}\nanswer = input('nobody answers: ')", allow_stdin=True)
            assert k.wait_until(lambda: bool(cell.input_requests()) or cell.done, 60), "never asked"
            assert not cell.done, cell.errors()
            assert k.wait_until(lambda: cell.done, 30), f"{line}: the cell still waits on input past its limit"
            assert cell.reply["content"]["ename"] == "KeyboardInterrupt", cell.reply["content"]
            assert cell.footers()[-1]["timings"]["wall"] < 15
        assert "past --max-cost $0.002 (test $0.001000/s, 2026-11-29)" in "".join(
            e.msg["content"]["text"] for e in cell.streams("stderr"))
        # code that catches the interrupt and then asks: the limit has passed, so nobody is asked
        late = k.submit("%%gpu --timeout 1\nimport time\ntry:\n    time.sleep(30)\n"
                        "except KeyboardInterrupt:\n    answer = input('asked after the timeout: ')",
                        allow_stdin=True)
        assert k.wait_until(lambda: late.done, 30), "a question asked past --timeout still waits"
        assert late.reply["content"]["ename"] == "KeyboardInterrupt", late.reply["content"]
        after = k.run("%%gpu\nprint(kept + 1, answer)")
        assert after.stdout() == "42 Ada\n" and after.footers()[-1]["cold"] is False
    finally:
        k.shutdown()
