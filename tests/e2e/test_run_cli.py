"""`jupyter-gpu run` end to end: the real CLI as a subprocess, real kernels, the embedded backend (or
a real backend process), real workers.  Each exit code comes from a real notebook run."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request

import pytest

from tests.e2e.helpers import FOOTER_MIME, last_footer
from tests.e2e.run_cli import (EXIT_BUDGET, EXIT_CELL, EXIT_INFRA, EXIT_OK, LiveCli, cases, junit, notebook,
                               read, run_cli)

LOAD = "%load_ext jupyter_gpu"


def test_a_passing_run_streams_output_as_it_comes_injects_parameters_and_writes_reports(fresh_kernel_env, tmp_path):
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    nb = notebook(
        tmp_path / "ok.ipynb",
        LOAD,
        ("n = 2\nname = 'x'\ngo = ''", ["parameters"]),
        # the cell blocks until the test has seen its first line on the CLI's stdout: only live
        # streaming lets it finish
        "%%gpu\nprint(f'waiting for go from {name}', flush=True)\nwith open(go) as f:\n    word = f.read()\n"
        "print('got', word)\ny = n * 10",
        "print('y =', y, type(n).__name__)",
    )
    summary = tmp_path / "step-summary.md"
    summary.write_text("earlier step\n")
    env = {**fresh_kernel_env, "GITHUB_STEP_SUMMARY": str(summary)}
    out = tmp_path / "out"
    cli = LiveCli([nb, "-p", "n", "3", "-p", "name", "hello", "-p", "go", fifo, "--output", out,
                   "--junit", tmp_path / "junit.xml", "--report", "md,json", "--report", "html"], env, tmp_path)
    try:
        assert cli.wait_for_line("waiting for go from hello", timeout=120), "".join(cli.seen)
        with open(fifo, "w") as f:
            f.write("go!")
        rc, stdout, stderr = cli.finish(timeout=120)
    finally:
        cli.stop()
    assert rc == EXIT_OK, stdout + stderr
    assert "got go!" in stdout and "y = 30 int" in stdout  # -p n 3 is the int 3, -p name hello a string
    assert "[1/1]" in stdout and "ok in" in stdout  # the progress line
    executed = read(out / "ok.ipynb")
    injected = executed.cells[2]
    assert injected.metadata["tags"] == ["injected-parameters"]  # right after the `parameters` cell
    assert "n = 3" in injected.source and "name = 'hello'" in injected.source
    assert last_footer(executed.cells[3])["status"] == "ok"
    root = junit(tmp_path / "junit.xml")
    case = cases(root)["ok.ipynb"]
    assert case.find("failure") is None and case.find("error") is None
    text = summary.read_text()
    assert text.startswith("earlier step\n")  # appended, not overwritten
    assert "## jupyter-gpu run: 1/1 notebook(s) passed - exit 0" in text and "cost report" in text
    assert json.loads((out / "report.json").read_text())["notebooks"]
    assert (out / "report.md").read_text().strip() and "<html" in (out / "report.html").read_text()


def test_a_failed_cell_exits_1_and_the_executed_notebook_shows_where_it_stopped(fresh_kernel_env, tmp_path):
    fail = notebook(tmp_path / "fail.ipynb", LOAD, "%%gpu\nx = 1\n1/0", "print('never reached')")
    # marked "expected to fail" but passes: that is a failure too
    xpass = notebook(tmp_path / "xpass.ipynb", "print('fine')", metadata={"jupyter_gpu": {"expect_failure": "demo"}})
    out = tmp_path / "out"
    r = run_cli([fail, xpass, "--output", out, "--junit", tmp_path / "junit.xml"], fresh_kernel_env, tmp_path)
    assert r.returncode == EXIT_CELL, r.stdout + r.stderr
    assert "ZeroDivisionError" in r.stdout  # the traceback was streamed
    executed = read(out / "fail.ipynb")  # written although it failed
    err = [o for o in executed.cells[1].outputs if o.output_type == "error"]
    assert err and err[0].ename == "ZeroDivisionError"
    assert executed.cells[2].outputs == [] and executed.cells[2].execution_count is None
    root = junit(tmp_path / "junit.xml")
    failure = cases(root)["fail.ipynb"].find("failure")
    assert failure.get("type") == "ZeroDivisionError"
    assert "1/0" in failure.text and "ZeroDivisionError: division by zero" in failure.text  # source + traceback
    assert "expected to fail" in cases(root)["xpass.ipynb"].find("failure").get("message")
    assert root.find("testsuite").get("failures") == "2"


PRICES = """
[[serverless]]
gpu = "cpu"
provider = "ci-runner"
provider_name = "our CI runners"
per_s = 0.01
as_of = "2026-11-29"
source = "a team's own rate for its CPU runners (test fixture)"
"""


def test_a_broken_budget_exits_3_and_stops_the_notebook_after_the_cell(fresh_kernel_env, tmp_path):
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    env = {**fresh_kernel_env, "JUPYTER_GPU_PRICES": str(prices), "GITHUB_STEP_SUMMARY": str(tmp_path / "s.md")}
    # ~0.3 s at $0.01/s: over the budget by itself, cold start or not (the embedded backend's early
    # worker is often up before the first cell: no cold start billed to it)
    nb = notebook(tmp_path / "costly.ipynb", LOAD, "%%gpu\nimport time\ntime.sleep(0.3)\nprint('one')",
                  "%%gpu\nprint('two')", "print('local')")
    later = notebook(tmp_path / "later.ipynb", "print('never run')")
    out = tmp_path / "out"
    r = run_cli([nb, later, "--max-cost", "0.001", "--output", out, "--junit", tmp_path / "junit.xml"], env, tmp_path)
    assert r.returncode == EXIT_BUDGET, r.stdout + r.stderr
    executed = read(out / "costly.ipynb")
    assert last_footer(executed.cells[1])["cost_usd"] > 0.001
    assert executed.cells[2].outputs == [] and executed.cells[3].outputs == []  # stopped right there
    assert not (out / "later.ipynb").exists()
    root = junit(tmp_path / "junit.xml")
    assert cases(root)["costly.ipynb"].find("failure").get("type") == "BudgetExceeded"
    assert "budget" in cases(root)["later.ipynb"].find("skipped").get("message")
    assert "over --max-cost \\$0.001000" in (tmp_path / "s.md").read_text()  # \$: no LaTeX on GitHub
    # the log's cost summary is read as text: its dollars without the markdown file's backslashes
    assert "## jupyter-gpu cost report" in r.stdout and "$0.0" in r.stdout and "\\$" not in r.stdout


def test_the_run_budget_stops_a_long_cell_while_it_runs(fresh_kernel_env, tmp_path):
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)  # cpu at $0.01/s: $0.03 is about 3 s
    env = {**fresh_kernel_env, "JUPYTER_GPU_PRICES": str(prices)}
    nb = notebook(tmp_path / "endless.ipynb", LOAD, "%%gpu\nimport threading\nthreading.Event().wait()  # never set",
                  "print('never reached')")
    out = tmp_path / "out"
    # without the budget reaching into the cell, the per-cell timeout would end it: exit 1, not 3
    r = run_cli([nb, "--max-cost", "0.03", "--timeout", "120", "--output", out], env, tmp_path)
    assert r.returncode == EXIT_BUDGET, r.stdout + r.stderr
    cell = read(out / "endless.ipynb").cells[1]
    assert "stopping the cell" in "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stderr")
    assert last_footer(cell)["timings"]["wall"] < 60


def test_the_run_budget_stops_a_long_function_call_as_it_would_a_cell(fresh_kernel_env, tmp_path):
    """`f.remote` under `jupyter-gpu run --max-cost`: the call is stopped at what the run left, with
    the budget's message, as a `%%gpu` cell is (it used to run unlimited: issue 22)."""
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)  # cpu at $0.01/s: $0.03 is about 3 s
    env = {**fresh_kernel_env, "JUPYTER_GPU_PRICES": str(prices)}
    nb = notebook(tmp_path / "endless_call.ipynb", LOAD,
                  "import jupyter_gpu\n\n@jupyter_gpu.function\ndef forever():\n    import threading\n"
                  "    threading.Event().wait()  # never set",
                  "forever.remote()", "print('never reached')")
    out = tmp_path / "out"
    r = run_cli([nb, "--max-cost", "0.03", "--timeout", "120", "--output", out], env, tmp_path)
    assert r.returncode == EXIT_BUDGET, r.stdout + r.stderr
    cell = read(out / "endless_call.ipynb").cells[2]
    said = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stderr")
    assert "stopping the cell" in said and "past --max-cost $0.03" in said, said
    assert [o.ename for o in cell.outputs if o.output_type == "error"] == ["KeyboardInterrupt"]
    f = last_footer(cell)  # the cell's calls footer: one call, stopped soon after the budget ran out
    assert f["calls"] == 1 and f["status"] == "interrupted" and f["timings"]["wall"] < 60


def test_a_cell_the_backend_refuses_over_its_session_budget_exits_3(fresh_kernel_env, tmp_path, monkeypatch):
    from tests.integration.backend_process import start_backend, stop_backend

    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    monkeypatch.setenv("JUPYTER_GPU_PRICES", str(prices))  # the backend counts spend at the same price
    d = tmp_path / "backend"
    d.mkdir()
    proc, url = start_backend(d, "--token", "t", "--session-budget", "0.000001")
    try:
        nb = notebook(tmp_path / "refused.ipynb", LOAD, "%%gpu\nprint('first')", "%%gpu\nprint('second')")
        env = {**fresh_kernel_env, "JUPYTER_GPU_PRICES": str(prices)}
        r = run_cli([nb, "--url", url, "--token", "t", "--output", tmp_path / "out"], env, tmp_path)
    finally:
        stop_backend(proc)
    assert r.returncode == EXIT_BUDGET, r.stdout + r.stderr
    err = [o for o in read(tmp_path / "out" / "refused.ipynb").cells[2].outputs if o.output_type == "error"]
    assert err and err[0].ename == "BudgetExceeded"


def test_a_lost_worker_exits_4(fresh_kernel_env, tmp_path):
    nb = notebook(tmp_path / "lost.ipynb", LOAD, "%%gpu\nimport os\nos._exit(3)", "print('after')")
    r = run_cli([nb, "--output", tmp_path / "out", "--junit", tmp_path / "junit.xml"], fresh_kernel_env, tmp_path)
    assert r.returncode == EXIT_INFRA, r.stdout + r.stderr
    assert (tmp_path / "out" / "lost.ipynb").exists()
    error = cases(junit(tmp_path / "junit.xml"))["lost.ipynb"].find("error")
    assert error.get("type") == "WorkerLost" and "os._exit(3)" in error.text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_configured_backend_is_checked_first_and_a_bad_token_is_never_green(fresh_kernel_env, tmp_path):
    from tests.integration.backend_process import start_backend, stop_backend

    d = tmp_path / "backend"
    d.mkdir()
    proc, url = start_backend(d, "--token", "s3cret")
    try:
        nb = notebook(tmp_path / "remote.ipynb", LOAD, "%%gpu\nprint('on the shared backend')")
        out = tmp_path / "out"
        wrong = run_cli([nb, "--url", url, "--token", "wrong", "--output", out, "--junit", tmp_path / "j1.xml"],
                        fresh_kernel_env, tmp_path, timeout=60)
        assert wrong.returncode == EXIT_INFRA and "refused the token" in wrong.stderr, wrong.stdout + wrong.stderr
        assert not (out / "remote.ipynb").exists()  # reported up front, before any kernel
        assert cases(junit(tmp_path / "j1.xml"))["remote.ipynb"].find("error").get("type") == "AuthError"

        empty = run_cli([nb, "--output", out], {**fresh_kernel_env, "JUPYTER_GPU_URL": url, "JUPYTER_GPU_TOKEN": ""},
                        tmp_path, timeout=60)
        assert empty.returncode == EXIT_INFRA and "JUPYTER_GPU_TOKEN" in empty.stderr, empty.stdout + empty.stderr

        down = run_cli([nb, "--url", f"http://127.0.0.1:{_free_port()}", "--token", "x", "--output", out],
                       fresh_kernel_env, tmp_path, timeout=60)
        assert down.returncode == EXIT_INFRA and "cannot reach" in down.stderr, down.stdout + down.stderr

        env = {**fresh_kernel_env, "JUPYTER_GPU_URL": url, "JUPYTER_GPU_TOKEN": "s3cret"}
        ok = run_cli([nb, "--output", out], env, tmp_path)
        assert ok.returncode == EXIT_OK, ok.stdout + ok.stderr
        req = urllib.request.Request(f"{url}/api/cells", headers={"Authorization": "token s3cret"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.load(resp)["cells"], "the cell did not run on the configured backend"
        # the kernel used that backend: no embedded one was started
        assert not os.path.exists(os.path.join(fresh_kernel_env["JUPYTER_GPU_RUNTIME_DIR"], "backend.json"))
    finally:
        stop_backend(proc)


def test_gpu_fallback_runs_on_cpu_and_says_so_and_without_it_the_run_fails(fresh_kernel_env, tmp_path):
    nb = notebook(tmp_path / "b200.ipynb", LOAD, "%%gpu --gpu B200\nprint('ran')")
    r = run_cli([nb, "--output", tmp_path / "out"], fresh_kernel_env, tmp_path)
    assert r.returncode == EXIT_INFRA and "--gpu-fallback cpu" in r.stderr, r.stdout + r.stderr
    summary = tmp_path / "s.md"
    r = run_cli([nb, "--gpu-fallback", "cpu", "--output", tmp_path / "out"],
                {**fresh_kernel_env, "GITHUB_STEP_SUMMARY": str(summary)}, tmp_path)
    assert r.returncode == EXIT_OK, r.stdout + r.stderr
    f = last_footer(read(tmp_path / "out" / "b200.ipynb").cells[1])
    assert f["gpu"] == "cpu" and f["fallback_from"] == "B200"
    assert "asked for B200" in summary.read_text() and "--gpu-fallback cpu" in summary.read_text()


def _params_notebook(path):
    return notebook(path, LOAD, ("n = 2", ["parameters"]), "%%gpu\ntotal = n * 10\nprint('total', total)")


def test_papermill_runs_the_same_notebook_and_injects_parameters_where_run_does(fresh_kernel_env, tmp_path):
    nb = _params_notebook(tmp_path / "p.ipynb")
    pm = subprocess.run([sys.executable, "-m", "papermill", str(nb), str(tmp_path / "pm.ipynb"), "-p", "n", "3",
                         "-k", "python3", "--cwd", str(tmp_path)],
                        env=fresh_kernel_env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert pm.returncode == 0, pm.stdout + pm.stderr
    r = run_cli([nb, "-p", "n", "3", "--output", tmp_path / "out"], fresh_kernel_env, tmp_path)
    assert r.returncode == EXIT_OK, r.stdout + r.stderr
    for executed in (read(tmp_path / "pm.ipynb"), read(tmp_path / "out" / "p.ipynb")):
        tags = [c.metadata.get("tags", []) for c in executed.cells]
        assert tags.index(["injected-parameters"]) == 2
        gpu_cell = executed.cells[3]
        assert "total 30" in "".join(o.get("text", "") for o in gpu_cell.outputs)
        assert any(FOOTER_MIME in o.get("data", {}) for o in gpu_cell.outputs)


def test_pytest_nbmake_runs_the_same_notebooks_and_fails_the_failing_one(fresh_kernel_env, tmp_path):
    _params_notebook(tmp_path / "good.ipynb")
    notebook(tmp_path / "bad.ipynb", LOAD, "%%gpu\nraise ValueError('on the worker')")
    r = subprocess.run([sys.executable, "-m", "pytest", "--nbmake", "good.ipynb", "bad.ipynb", "-p", "no:cacheprovider",
                        "-q", "--rootdir", str(tmp_path)],
                       env=fresh_kernel_env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 failed, 1 passed" in r.stdout and "ValueError" in r.stdout, r.stdout


@pytest.mark.parametrize("argv, message", [
    (["-p", "not a name", "1"], "not a Python name"),
    (["--report", "pdf"], "use md, json or html"),
    (["--token", "t"], "--token without --url"),
    (["missing.ipynb"], "no such notebook: missing.ipynb"),
    (["--embedded", "--url", "http://127.0.0.1:1"], "--embedded cannot go with"),
])
def test_bad_arguments_exit_2_before_running_anything(fresh_kernel_env, tmp_path, argv, message):
    nb = notebook(tmp_path / "x.ipynb", "print(1)")
    r = run_cli([nb, *argv, "--output", tmp_path / "out"], fresh_kernel_env, tmp_path, timeout=60)
    assert r.returncode == 2 and message in r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "out").exists()


def test_a_cell_over_the_timeout_fails_the_notebook_with_exit_1(fresh_kernel_env, tmp_path):
    nb = notebook(tmp_path / "slow.ipynb", LOAD, "%%gpu\nimport threading\nthreading.Event().wait()  # never set",
                  "print('never reached')")
    r = run_cli([nb, "--timeout", "5", "--output", tmp_path / "out", "--junit", tmp_path / "junit.xml"],
                fresh_kernel_env, tmp_path)
    assert r.returncode == EXIT_CELL, r.stdout + r.stderr
    assert "longer than --timeout 5 s" in r.stderr
    assert cases(junit(tmp_path / "junit.xml"))["slow.ipynb"].find("failure").get("type") == "CellTimeoutError"
    assert read(tmp_path / "out" / "slow.ipynb").cells[2].outputs == []


def test_the_device_choice_saved_in_the_notebook_applies_in_ci(fresh_kernel_env, tmp_path):
    """The JupyterLab sidebar stores the notebook's GPU type and keep-warm in metadata.jupyter_gpu;
    `jupyter-gpu run` applies them as `%gpu config` would, and refuses a value that is not one."""
    cells = (LOAD, "%%gpu\nx = 1")
    ok = notebook(tmp_path / "chosen.ipynb", *cells, metadata={"jupyter_gpu": {"gpu": "cpu", "keep_warm": "42s"}})
    absent = notebook(tmp_path / "absent.ipynb", *cells, metadata={"jupyter_gpu": {"gpu": "NoSuchGPU"}})
    bad = notebook(tmp_path / "bad.ipynb", *cells, metadata={"jupyter_gpu": {"gpu": "cpu; import os"}})
    out = tmp_path / "out"
    r = run_cli([ok, "--output", out], fresh_kernel_env, tmp_path)
    assert r.returncode == EXIT_OK, r.stdout + r.stderr
    f = last_footer(read(out / "chosen.ipynb").cells[1])
    assert f["gpu"] == "cpu" and f["keep_warm"] == 42, f
    r = run_cli([absent, "--output", out], fresh_kernel_env, tmp_path)
    assert r.returncode == EXIT_INFRA and "NoSuchGPU" in r.stdout + r.stderr, r.stdout + r.stderr
    r = run_cli([bad, "--output", out], fresh_kernel_env, tmp_path)
    assert r.returncode == EXIT_CELL and "not a GPU type list" in r.stdout + r.stderr, r.stdout + r.stderr
    # the worker image too: one this backend does not have fails naming the ones it has
    other = notebook(tmp_path / "image.ipynb", *cells, metadata={"jupyter_gpu": {"image": "nosuch"}})
    r = run_cli([other, "--output", out], fresh_kernel_env, tmp_path)
    assert r.returncode != EXIT_OK and "nosuch" in r.stdout + r.stderr and "default" in r.stdout + r.stderr, \
        r.stdout + r.stderr
    odd = notebook(tmp_path / "odd.ipynb", *cells, metadata={"jupyter_gpu": {"image": "a b"}})
    r = run_cli([odd, "--output", out], fresh_kernel_env, tmp_path)
    assert r.returncode == EXIT_CELL and "not a worker image name" in r.stdout + r.stderr, r.stdout + r.stderr


def test_a_spawned_calls_id_is_kept_in_its_cells_metadata(fresh_kernel_env, tmp_path):
    """Issue 22: the executed notebook names the calls its cells spawned (metadata jupyter_gpu.calls,
    as the lab extension keeps it), so they can be got back once the kernel is gone."""
    nb = notebook(tmp_path / "spawn.ipynb",
                  "import jupyter_gpu\n\n@jupyter_gpu.function(gpu='cpu')\ndef f(x):\n    return x * 21\n\n"
                  "fc = f.spawn(2)\nprint(fc.object_id, fc.get())",
                  "print('no call here')")
    out = tmp_path / "out"
    r = run_cli([nb, "--output", out], fresh_kernel_env, tmp_path)
    assert r.returncode == EXIT_OK, r.stdout + r.stderr
    executed = read(out / "spawn.ipynb")
    cid, value = "".join(o.get("text", "") for o in executed.cells[0].outputs if o.output_type == "stream").split()
    assert value == "42" and cid.startswith("fc-")
    calls = executed.cells[0].metadata["jupyter_gpu"]["calls"]
    assert [(c["id"], c["function"]) for c in calls] == [(cid, "f")], calls
    assert isinstance(calls[0]["created"], (int, float)) and calls[0]["created"] > 0
    assert "jupyter_gpu" not in executed.cells[1].metadata
