"""CI runs the example notebooks the way a team's CI would: `jupyter-gpu run notebooks/*.ipynb`.

The failure demo is marked (notebook metadata `jupyter_gpu.expect_failure`), so the run is green
only if it fails, and every other notebook passes."""
from __future__ import annotations

from pathlib import Path

from tests.e2e.helpers import FOOTER_MIME, error_output, last_footer
from tests.e2e.run_cli import EXIT_OK, cases, junit, read, run_cli

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _cell(nb, starts: str):
    return next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith(starts))


def test_the_example_notebooks_run_green_in_ci_with_the_failure_demo_failing(fresh_kernel_env, tmp_path):
    names = {p.name for p in NOTEBOOKS}
    assert {"quickstart.ipynb", "training_loop.ipynb", "failure_demo.ipynb", "cost_report.ipynb"} <= names
    out = tmp_path / "out"
    r = run_cli([*NOTEBOOKS, "--output", out, "--junit", tmp_path / "junit.xml", "--report", "html"],
                fresh_kernel_env, ROOT, timeout=900)
    assert r.returncode == EXIT_OK, r.stdout + r.stderr
    results = cases(junit(tmp_path / "junit.xml"))
    assert "expected failure" in results["failure_demo.ipynb"].find("skipped").get("message")
    for name in names - {"failure_demo.ipynb"}:
        assert len(results[name]) <= 1 and results[name].find("skipped") is None, name  # only system-out

    demo = read(out / "failure_demo.ipynb")
    failed = _cell(demo, "%%gpu")
    assert error_output(failed)["ename"] == "RuntimeError" and last_footer(failed)["status"] == "error"
    assert demo.cells[-1].outputs == []  # stopped at the failed cell

    training = read(out / "training_loop.ipynb")
    train = _cell(training, "%%gpu")
    assert last_footer(train)["status"] == "ok"
    progress = "".join(o.get("text", "") for o in train.outputs if o.get("name") == "stderr")
    assert "100%" in progress and "epoch 3/3" in progress  # tqdm's bar came back
    plots = [o for o in train.outputs if "image/png" in o.get("data", {})]
    assert len(plots) == 1  # one live plot, updated in place (not one image per epoch)

    cost = read(out / "cost_report.ipynb")
    report = _cell(cost, "%gpu cost")
    assert any("text/html" in o.get("data", {}) for o in report.outputs)
    assert sum(1 for c in cost.cells for o in c.get("outputs", []) if FOOTER_MIME in o.get("data", {})) >= 2
    assert "<html" in (out / "report.html").read_text()
