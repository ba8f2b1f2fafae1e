"""The pure parts of `jupyter-gpu run`: parameters, exit-code precedence, JUnit for every outcome."""
from __future__ import annotations

import argparse
from pathlib import Path

import nbformat
import pytest

from jupyter_gpu.ci import artifacts, runner

SCHEMA = Path(__file__).resolve().parents[2] / "junit.xsd"


def _nb(*cells):
    nb = nbformat.v4.new_notebook()
    for source, tags in cells:
        c = nbformat.v4.new_code_cell(source)
        if tags:
            c.metadata["tags"] = tags
        nb.cells.append(c)
    return nb


@pytest.mark.parametrize("text, value", [
    ("3", 3), ("0.5", 0.5), ("True", True), ("[1, 2]", [1, 2]), ("'quoted'", "quoted"),
    ("hello", "hello"), ("/tmp/x.csv", "/tmp/x.csv"), ("1 +", "1 +"), ("os.system('x')", "os.system('x')"),
])
def test_values_are_python_literals_when_they_parse_else_strings(text, value):
    assert runner.parse_value(text) == value


def test_parameters_go_after_the_parameters_cell_and_replace_an_earlier_injection():
    nb = _nb(("import x", []), ("n = 1", ["parameters"]), ("n = 9", ["injected-parameters"]), ("print(n)", []))
    runner.inject_parameters(nb, {"n": 3, "name": "a"})
    assert [c.source for c in nb.cells] == ["import x", "n = 1", "# Parameters\nn = 3\nname = 'a'", "print(n)"]
    assert nb.cells[2].metadata["tags"] == ["injected-parameters"]
    runner.inject_parameters(nb, {"s": {1, 2}})  # a literal JSON cannot hold still makes a notebook
    nbformat.validate(nb)
    assert nbformat.reads(nbformat.writes(nb), as_version=4).cells[2].source == "# Parameters\ns = {1, 2}"


def test_without_a_parameters_cell_they_go_first_and_without_parameters_nothing_changes():
    nb = _nb(("print(n)", []))
    runner.inject_parameters(nb, {})
    assert len(nb.cells) == 1
    runner.inject_parameters(nb, {"n": 1})
    assert nb.cells[0].source == "# Parameters\nn = 1" and nb.cells[1].source == "print(n)"


@pytest.mark.parametrize("statuses, code", [
    (["passed", "xfailed", "not run"], 0),
    (["passed", "failed"], 1),
    (["xpassed"], 1),
    (["failed", "budget"], 3),
    (["budget", "infra", "failed"], 4),
])
def test_the_most_serious_failure_decides_the_exit_code(statuses, code):
    assert runner.exit_code([runner.Outcome("x", status=s) for s in statuses]) == code


def test_an_executed_notebook_never_overwrites_its_source(tmp_path):
    src = tmp_path / "a.ipynb"
    taken = set()
    assert runner._out_path(str(src), str(tmp_path), taken) == str(tmp_path / "a.executed.ipynb")
    assert runner._out_path("other/a.ipynb", "out", taken) == "out/a.ipynb"
    assert runner._out_path("more/a.ipynb", "out", taken) == "out/a-2.ipynb"


def test_junit_for_every_outcome_is_valid_and_says_what_happened():
    import xml.etree.ElementTree as ET

    import xmlschema

    args = argparse.Namespace(max_cost=0.5, gpu_fallback="cpu")
    O = runner.Outcome
    outcomes = [
        O("nb/ok.ipynb", status="passed", out_path="out/ok.ipynb", seconds=1.5, cost=0.01, gpu_cells=2),
        O("nb/fail.ipynb", status="failed", cell=3, source="%%gpu\n1/0", ename="ZeroDivisionError",
          traceback="ZeroDivisionError: division by zero\x1b", reason="ZeroDivisionError: division by zero"),
        O("nb/demo.ipynb", status="xfailed", reason="RuntimeError: shapes", traceback="RuntimeError: shapes"),
        O("nb/xpass.ipynb", status="xpassed", reason="expected to fail (demo), but every cell passed"),
        O("nb/costly.ipynb", status="budget", reason="the run has cost $0.6, over --max-cost $0.5"),
        O("nb/later.ipynb", status="not run", reason="not run: the run's budget ($0.500000) was spent"),
        O("nb/lost.ipynb", status="infra", ename="WorkerLost", reason="WorkerLost: exit code 3"),
    ]
    xml = artifacts.junit_xml(outcomes, args)
    xmlschema.XMLSchema(str(SCHEMA)).validate(xml.decode())
    root = ET.fromstring(xml)
    suite = root.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("7", "3", "1", "2")
    case = {c.get("name"): c for c in suite.iter("testcase")}
    assert case["ok.ipynb"].find("failure") is None and "out/ok.ipynb" in case["ok.ipynb"].find("system-out").text
    fail = case["fail.ipynb"].find("failure")
    assert fail.get("type") == "ZeroDivisionError" and "cell 4:\n%%gpu\n1/0" in fail.text and "\x1b" not in fail.text
    assert case["demo.ipynb"].find("skipped").get("message").startswith("expected failure")
    assert case["costly.ipynb"].find("failure").get("type") == "BudgetExceeded"
    assert case["lost.ipynb"].find("error").get("type") == "WorkerLost"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props == {"cost_usd": "0.010000", "max_cost_usd": "0.500000", "gpu_fallback": "cpu"}


def test_the_run_budget_left_becomes_each_cells_limit(monkeypatch):
    from jupyter_gpu.cost.limit import RUN_BUDGET_ENV, run_limit

    monkeypatch.delenv(RUN_BUDGET_ENV, raising=False)
    assert run_limit(None, "H100", 0.0) is None and run_limit(0.2, "H100", 0.0) == 0.2
    monkeypatch.setenv(RUN_BUDGET_ENV, "0.5")
    spent = 0.1 + 0.15  # what the kernel's cells cost so far
    assert run_limit(None, "H100", spent) == pytest.approx(0.25)  # what the kernel's cells left of it
    assert run_limit(0.1, "H100", spent) == 0.1  # the cell's own --max-cost when smaller
    assert run_limit(None, "H100", spent + 1.0) == 0.0
    assert run_limit(None, "cpu", spent) == pytest.approx(0.25)  # the cpu device has a list price: it bites too
    assert run_limit(None, "Z9", spent) is None  # no price: the limit could not bite


def test_the_terminal_shows_outputs_waits_once_and_footers_as_their_cost_line():
    import io

    from jupyter_gpu.cost.footer import MIME

    out = io.StringIO()
    term = runner.Terminal(out)

    def msg(kind, **content):
        term({"msg_type": kind, "content": content})

    def live(phase, position=None):
        return {MIME: {"live": True, "phase": phase, "position": position}, "text/plain": f"gpu: {phase} {position or ''}"}

    msg("display_data", data=live("queued", 2))
    msg("update_display_data", data=live("queued", 2))  # the same wait, a second later: not repeated
    msg("update_display_data", data=live("queued", 1))
    msg("update_display_data", data=live("cold_start"))
    msg("update_display_data", data=live("running"))
    msg("stream", name="stdout", text="step 1\r")
    msg("display_data", data={"text/plain": "<Figure>", "image/png": "..."})
    msg("update_display_data", data={"text/plain": "<Figure>", "image/png": "..."})
    msg("execute_result", data={"text/plain": "42"})
    msg("display_data", data={MIME: {"status": "ok"}, "text/plain": "gpu: cpu [ok] \x1b[1m$0\x1b[0m"})
    msg("error", ename="ValueError", evalue="x", traceback=["\x1b[31mValueError\x1b[0m: x"])
    assert out.getvalue() == ("   gpu: queued 2\n   gpu: queued 1\n   gpu: cold_start \nstep 1\r<Figure>\nOut: 42\n"
                              "   gpu: cpu [ok] $0\nValueError: x\n")
