"""Hybrid pools through a real kernel: cells on a backend's dedicated worker say `pool: dedicated`
in their footer (the warm ones too, which go by the direct lane), and cost their share of the
dedicated hourly price, never serverless seconds.  Prices: a team file that prices the cpu device."""
from __future__ import annotations

import json

import pytest

from tests.e2e.helpers import LOAD, last_footer
from tests.integration.backend_process import start_backend, stop_backend

PRICES = """
[defaults]
dedicated = "test"

[[serverless]]
gpu = "cpu"
provider = "test"
per_s = 0.001
as_of = "2026-11-29"
source = "https://example.org/a-test-price"

[[dedicated]]
gpu = "cpu"
provider = "test"
per_h = 1.8
as_of = "2026-11-29"
source = "https://example.org/a-test-price"
"""


@pytest.mark.timeout(180)
def test_cells_on_the_dedicated_pool_say_so_and_cost_their_hourly_share(run_notebook, kernel_env, tmp_path,
                                                                        monkeypatch):
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    monkeypatch.setenv("JUPYTER_GPU_PRICES", str(prices))
    proc, url = start_backend(tmp_path, "--dedicated", "cpu=1")
    try:
        token = json.loads((tmp_path / "backend.json").read_text())["token"]
        env = {**kernel_env, "JUPYTER_GPU_URL": url, "JUPYTER_GPU_TOKEN": token, "JUPYTER_GPU_PRICES": str(prices)}
        nb = run_notebook([LOAD, "%%gpu\nimport time\ntime.sleep(0.3)", "%%gpu\ntime.sleep(0.3)"], env=env)
    finally:
        stop_backend(proc)
    first, warm = last_footer(nb.cells[1]), last_footer(nb.cells[2])
    assert first["pool"] == "dedicated" and first["cold"] is False  # the dedicated worker was already up
    assert warm["pool"] == "dedicated" and warm["worker"] == first["worker"]
    assert warm["route"] == "lane"  # the warm cell went straight to its worker: the kernel remembered the pool
    for f in (first, warm):
        assert f["billed_seconds"] == 0.0  # nothing per second
        assert f["cost_usd"] == pytest.approx(f["timings"]["run"] * 1.8 / 3600)  # its share of $1.8/h
        assert f["cost_usd"] != pytest.approx(f["timings"]["run"] * 0.001)
    text = "".join(o.get("data", {}).get("text/plain", "") for o in nb.cells[2].outputs if o.output_type == "display_data")
    assert "pool: dedicated" in text and "share of the dedicated pool (test 2026-11-29)" in text, text
