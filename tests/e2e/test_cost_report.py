"""A report built from a saved executed notebook equals the live `%gpu cost` of the same session.

Real parts: a real kernel (nbclient), the real embedded backend and its workers, the real CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import nbformat
import pytest

from jupyter_gpu.cost import report
from tests.e2e.helpers import LOAD, last_footer

CELLS = [
    LOAD,
    "%%gpu --keep-warm 30s\nx = 21\nprint(x)",
    "z = 1  # a local cell: the worker idles (keep-warm) meanwhile",
    "%%gpu\ny = x * 2\ny",
    "%gpu cost",
    "%gpu report",  # DESIGN's name for the same summary
]


def _live(cell) -> dict:
    outs = [o for o in cell["outputs"] if report.MIME in o.get("data", {})]
    assert len(outs) == 1, cell["outputs"]
    data = outs[0]["data"]
    assert "<svg" in data["text/html"] and "cost-line" in data["text/html"]
    assert "recommendation:" in data["text/plain"]
    return data[report.MIME]


def _same(a: dict, b: dict) -> None:
    assert a["total"] == b["total"]
    assert a["prices"] == b["prices"]
    assert [nb["summary"] for nb in a["notebooks"]] == [nb["summary"] for nb in b["notebooks"]]


PRICES = """
[[serverless]]
gpu = "cpu"
provider = "test"
per_s = 0.001
as_of = "2026-11-29"
source = "https://example.org/a-test-price"
profile = "modal"

[[dedicated]]
gpu = "cpu"
provider = "test"
per_h = 1.8
as_of = "2026-11-29"
source = "https://example.org/a-test-price"
"""


def test_report_from_saved_notebook_equals_live_summary(run_notebook, kernel_env, tmp_path):
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)  # the cpu device priced, so every figure below is non-zero arithmetic
    nb = run_notebook(CELLS, env={**kernel_env, "JUPYTER_GPU_PRICES": str(prices)})
    f1, f2 = last_footer(nb.cells[1]), last_footer(nb.cells[3])
    live = _live(nb.cells[4])
    _same(_live(nb.cells[5]), live)
    s = live["total"]
    assert s["cells"] == 2 and s["failed"] == 0
    assert f1["price"]["origin"] == str(prices) and f1["cost_usd"] > 0
    assert s["serverless_usd"] > f1["cost_usd"] + f2["cost_usd"]  # + idle, rounded up per worker
    assert s["dedicated_usd"] > 0 and s["break_even"]["utilisation"] == 0.5
    # the local cell between them: the worker stayed warm and idle, billed to the session
    assert f1["worker"] == f2["worker"]
    # on the worker's clock, from its end of cell 1 to its start of cell 2; billed in cell 2's footer
    t2 = f2["timings"]
    gap = f2["worker_ended_at"] - t2["queue"] - t2["cold_start"] - t2["run"] - f1["worker_ended_at"]
    assert s["phases_s"]["keep_warm_idle"] == f2["keep_warm_idle_s"] == pytest.approx(gap, abs=1e-9) and gap > 0
    assert f2["cost_usd"] == pytest.approx((t2["run"] + gap) * 0.001)  # its run and the idle it ended
    # the kernel sees less of it: it works on each cell before and after the worker does
    assert gap > f2["started_at"] - (f1["started_at"] + f1["timings"]["wall"]) > 0
    assert s["pending_keep_warm_s"] == 30.0
    path = tmp_path / "executed.ipynb"
    nbformat.write(nb, str(path))
    built = report.build([(str(path), nbformat.read(str(path), as_version=4))])
    _same(built, live)
    # the CLI reads the same file with no backend
    out = tmp_path / "r.json"
    subprocess.run([sys.executable, "-c", "from jupyter_gpu.cli import main; main()", "report", str(tmp_path),
                    "--format", "json", "--output", str(out)], check=True)
    _same(json.loads(out.read_text()), live)
    md = subprocess.run([sys.executable, "-c", "from jupyter_gpu.cli import main; main()", "report", str(path)],
                        check=True, capture_output=True, text=True).stdout
    assert "## jupyter-gpu cost report" in md and "2 %%gpu cell(s)" in md and "recommendation: **" in md
    page = report.to_html(built)
    assert page.startswith("<!doctype html>") and "<svg" in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    # advise replays the same saved cells
    adv = json.loads(subprocess.run(
        [sys.executable, "-c", "from jupyter_gpu.cli import main; main()", "advise", str(path),
         "--scenario", "serverless:0", "--scenario", "dedicated:1", "--json"],
        check=True, capture_output=True, text=True).stdout)
    g = adv["gpus"]["cpu"]
    assert g["requests"] == 2 and g["cold_start_s"] == f1["timings"]["cold_start"]
    sl, ded = g["results"]
    assert sl["cold_starts"] == 2 and ded["cold_starts"] == 0 and sl["cost_usd"] > 0 and ded["cost_usd"] > 0


def test_advise_reads_the_backend_ledger(run_notebook, kernel_env, tmp_path):
    """advise --url: the trace is the backend's own GET /api/cells, not the notebook."""
    from tests.integration.backend_process import start_backend, stop_backend

    proc, url = start_backend(tmp_path)
    try:
        token = json.loads((tmp_path / "backend.json").read_text())["token"]
        env = {**kernel_env, "JUPYTER_GPU_URL": url, "JUPYTER_GPU_TOKEN": token}
        nb = run_notebook([LOAD, "%%gpu\nx = 1", "%%gpu\ny = 2", "%%gpu\nz = 3"], env=env)
        cold = last_footer(nb.cells[1])["timings"]["cold_start"]
        out = subprocess.run(
            [sys.executable, "-c", "from jupyter_gpu.cli import main; main()", "advise", "--url", url,
             "--scenario", "dedicated:1", "--json"],
            check=True, capture_output=True, text=True, env={**os.environ, "JUPYTER_GPU_TOKEN": token}).stdout
        g = json.loads(out)["gpus"]["cpu"]
        assert g["requests"] == 3 and g["cold_start_from"] == "measured median"
        assert abs(g["cold_start_s"] - cold) < 0.05  # the backend's own measure of the same cold start
        bad = subprocess.run([sys.executable, "-c", "from jupyter_gpu.cli import main; main()", "advise", "--url", url,
                              "--token", "wrong"], capture_output=True, text=True)
        assert bad.returncode == 2 and "401" in bad.stderr
    finally:
        stop_backend(proc)


def test_a_lane_cell_is_owed_to_the_ledger_before_its_done_reaches_the_kernel(run_notebook, kernel_env, tmp_path):
    """The kernel may exit as soon as the last cell's `done` arrives; the worker's shutdown then
    flushes what it owes.  A report recorded only after `done` went out raced that shutdown and was
    lost under load (seen once in CI); here the worker's thread is held up just there."""
    from tests.integration.backend_process import api_get, start_backend, stop_backend

    slow_meter = ("%%gpu --no-out\nimport time, jupyter_gpu_worker.meter as m\n_owe = m.LaneMeter.owe\n"
                  "m.LaneMeter.owe = lambda self, report, ended: (time.sleep(1.0), _owe(self, report, ended))[1]")
    proc, url = start_backend(tmp_path)
    try:
        token = json.loads((tmp_path / "backend.json").read_text())["token"]
        env = {**kernel_env, "JUPYTER_GPU_URL": url, "JUPYTER_GPU_TOKEN": token}
        nb = run_notebook([LOAD, "%%gpu\nx = 1", slow_meter, "%%gpu\ny = 2"], env=env)
        assert [last_footer(c)["route"] for c in nb.cells[2:]] == ["lane"] * 2
        cells = api_get(url, token, "/api/cells")["cells"]
        assert sorted(c["status"] for c in cells) == ["ok"] * 3, cells
    finally:
        stop_backend(proc)


def test_once_the_kernel_exits_the_ledger_has_every_cell_even_from_a_worker_slow_to_report(run_notebook, kernel_env,
                                                                                            tmp_path):
    """A lane cell reaches the ledger when its worker reports it (once idle, or as it exits); the
    kernel's exit waits for the backend to stop its workers, so a ledger read right after the
    notebook ran (advise --url after jupyter-gpu run) finds every cell - here the worker takes
    half a second over each report, as on a loaded machine."""
    from tests.integration.backend_process import api_get, start_backend, stop_backend

    slow_reports = ("%%gpu --no-out\nimport time, jupyter_gpu_worker.meter as r\n"
                    "_flush = r.LaneMeter._flush_locked\n"
                    "r.LaneMeter._flush_locked = lambda self: (time.sleep(0.5), _flush(self))[1]")
    proc, url = start_backend(tmp_path)
    try:
        token = json.loads((tmp_path / "backend.json").read_text())["token"]
        env = {**kernel_env, "JUPYTER_GPU_URL": url, "JUPYTER_GPU_TOKEN": token}
        nb = run_notebook([LOAD, "%%gpu\nx = 1", slow_reports, "%%gpu\ny = 2", "%%gpu\nz = 3"], env=env)
        assert [last_footer(c)["route"] for c in nb.cells[2:]] == ["lane"] * 3  # reported by the worker
        cells = api_get(url, token, "/api/cells")["cells"]
        assert sorted((c["status"], c["run_s"] is not None) for c in cells) == [("ok", True)] * 4, cells
    finally:
        stop_backend(proc)
