"""Every %%gpu cell ends with a footer output that records what the cell cost, saved in the .ipynb."""
from __future__ import annotations

import json

import pytest

from .helpers import FOOTER_MIME, LOAD, last_footer

FOOTER_KEYS = {"status", "gpu", "device", "timings", "billed_seconds", "cost_usd", "dedicated_usd"}


@pytest.mark.timeout(180)
def test_footer_is_last_output_and_is_saved_in_the_notebook(run_notebook, fresh_kernel_env, tmp_path):
    import nbformat

    nb = run_notebook(
        [
            LOAD,
            "%%gpu\nx = 1",
            "%%gpu\nprint('hello')\ndisplay('shown')\n41 + 1",
            "%%gpu --no-out\nimport time\ntime.sleep(1.2)\ny = 2",
        ],
        env=fresh_kernel_env,
    )
    path = tmp_path / "saved.ipynb"
    nbformat.write(nb, path)
    saved = nbformat.read(path, as_version=4)

    for cell in saved.cells[1:]:
        last = cell["outputs"][-1]
        assert last["output_type"] == "display_data"
        assert {FOOTER_MIME, "text/plain", "text/html"} <= set(last["data"]), sorted(last["data"])
        f = last_footer(cell)
        assert FOOTER_KEYS <= set(f), sorted(f)
        assert f["status"] == "ok"
        assert f.get("live") is not True
        assert isinstance(f["gpu"], str) and f["gpu"]
        assert isinstance(f["device"], str) and f["device"]
        if f["gpu"] == "cpu":  # nothing to sample: no made-up GPU figures
            assert "telemetry" not in f and "peak" not in last["data"]["text/plain"]
        assert f["timings"]["wall"] > 0
        assert f["billed_seconds"] >= 0 and f["cost_usd"] >= 0 and f["dedicated_usd"] >= 0
        assert last["data"]["text/plain"].strip() and last["data"]["text/html"].strip()
        json.dumps(f)  # plain JSON

    # The sleeping cell's wall time covers its sleep.
    assert last_footer(saved.cells[3])["timings"]["wall"] >= 1.2


@pytest.mark.timeout(180)
def test_first_cell_of_a_fresh_backend_is_cold_then_warm(run_notebook, fresh_kernel_env):
    # (no early worker: its first cell could find that one up; test_preconnect.py has that case)
    nb = run_notebook([LOAD, "%%gpu\nx = 1", "%%gpu\ny = 2"], env=dict(fresh_kernel_env, JUPYTER_GPU_EARLY_WORKER="0"))
    first, second = last_footer(nb.cells[1]), last_footer(nb.cells[2])
    assert first["cold"] is True
    assert second["cold"] is False
    assert first["worker"] == second["worker"]


@pytest.mark.timeout(120)
def test_last_cell_api_matches_the_footer(run_notebook):
    nb = run_notebook(
        [LOAD, "%%gpu\nz = 3", "import jupyter_gpu, json\nprint(json.dumps(jupyter_gpu.last_cell()))"]
    )
    footer = last_footer(nb.cells[1])
    api = json.loads(nb.cells[2]["outputs"][0]["text"])
    for key in ("status", "gpu", "device", "worker", "cold", "billed_seconds", "cost_usd"):
        assert api[key] == footer[key], key
