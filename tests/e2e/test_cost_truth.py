"""Every dollar figure a user sees is the ledger times the catalog entry it names.

For an executed notebook (a real kernel run by nbclient, the real embedded backend with its real
SQLite ledger, the shipped catalog's `cpu` price) this recomputes each figure shown - every footer,
the `%gpu cost` report, the sidebar's state from the server extension's route - from the ledger's
rows and the catalog entry the footer names, and fails on a difference over one rounding unit of
the figure as shown.  The kernel and the backend time a cell on their own clocks: the few
milliseconds between them are worth ~1e-7 $ at a 2-core CPU price, under the $0.000001 shown.
"""
from __future__ import annotations

import os
import re
import sqlite3
import time

import nbformat
import pytest
from jupyter_gpu.ci.executor import NotebookClient

from jupyter_gpu.cost import pricing, report
from jupyter_gpu.cost.billing import round_billed
from tests.e2e.helpers import LOAD, last_footer
from tests.lab.server import jupyter

CELLS = [
    LOAD,
    "%%gpu --keep-warm 5m\nx = 21\nprint(x)",  # cold: the cold start is billed
    "import time\ntime.sleep(0.5)  # a local cell: the worker idles (keep-warm) meanwhile",
    "%%gpu\nimport time\ntime.sleep(0.3)\ny = x * 2\ny",  # warm: ends 0.5 s of idle, billed in its footer
    "%gpu cost",
]
MONEY = re.compile(r"\$(\d+\.\d+)")


def shown(text: str, before: str) -> tuple[float, float]:
    """(value, one rounding unit) of the dollar figure right before ``before`` in ``text``."""
    m = re.search(r"\$(\d+\.(\d+)) " + re.escape(before), text)
    assert m, f"no '$... {before}' in {text!r}"
    return float(m.group(1)), 10.0 ** -len(m.group(2))


def close(shown_value: tuple[float, float], truth: float, what: str) -> None:
    value, unit = shown_value
    assert abs(value - truth) <= unit, f"{what}: shown ${value} but the ledger says ${truth:.9f} (unit {unit})"


def catalog_entry(kind: str, provider_name: str):
    [e] = [e for e in pricing.catalog() if e.kind == kind and e.gpu == "cpu" and e.provider_name == provider_name]
    return e


@pytest.fixture
def shipped_catalog(monkeypatch, tmp_path):
    monkeypatch.delenv("JUPYTER_GPU_PRICES", raising=False)
    pricing.reload()
    yield
    pricing.reload()


def test_every_dollar_shown_is_the_ledger_times_the_catalog(fresh_kernel_env, tmp_path, shipped_catalog):
    env = {k: v for k, v in fresh_kernel_env.items() if k != "JUPYTER_GPU_PRICES"}  # the shipped catalog
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    client = NotebookClient(nb, kernel_name="python3", timeout=120, startup_timeout=120,
                            resources={"metadata": {"path": str(tmp_path)}})
    with jupyter(tmp_path, env) as server:
        with client.setup_kernel(env=env):
            for i, cell in enumerate(nb.cells):
                client.execute_cell(cell, i)
            # the kernel names its backend session after its connection file (notebook/session.py)
            kernel = os.path.basename(client.km.connection_file).removeprefix("kernel-").removesuffix(".json")
            before = time.time()
            status, state = server.get(f"jupyter-gpu/state?kernel={kernel}")  # what the sidebar polls
            after = time.time()
            assert status == 200 and state["sessions"], state
    # the ledger: the rows of this kernel's session, with the device its worker reported
    db = sqlite3.connect(env["JUPYTER_GPU_LEDGER"])
    rows = db.execute("SELECT c.session, c.worker, c.submitted, c.done, c.cold_start_s, c.run_s, w.device, "
                      "c.queue_s, c.load_s, c.exec_s, c.post_s "
                      "FROM cells c JOIN workers w ON w.id = c.worker WHERE c.session = ? ORDER BY c.submitted",
                      (state["sessions"][0],)).fetchall()
    db.close()
    assert len(rows) == 2 and rows[0][1] == rows[1][1], rows  # one worker, kept warm
    device = rows[0][6]
    cores = int(re.fullmatch(r"cpu \((\d+) cores?\)", device).group(1))

    f1, f2 = last_footer(nb.cells[1]), last_footer(nb.cells[3])
    # the catalog entries the footer names, priced per core and sized by the worker's cores
    s_entry = catalog_entry("serverless", f1["price"]["provider"])
    d_entry = catalog_entry("dedicated", f1["price"]["dedicated_provider"])
    assert (s_entry.provider, s_entry.per, d_entry.provider, d_entry.per) == ("modal", "core", "aws", "core")
    assert f1["price"]["origin"] == "shipped" and f1["price"]["cores"] == cores and f1["device"] == device
    per_s, per_h = s_entry.price * cores, d_entry.price * cores
    assert per_s > 0 and per_h > 0

    cell_s = [(r[4] or 0.0) + (r[5] or 0.0) for r in rows]  # cold start + run, billed per the modal profile
    walls = [r[3] - r[2] for r in rows]
    idle = rows[1][2] - rows[0][3]  # the worker idled between the two cells: billed to the second
    assert idle >= 0.5
    truth_footers = [cell_s[0] * per_s, (cell_s[1] + idle) * per_s]
    for cell, f, truth, wall in zip((nb.cells[1], nb.cells[3]), (f1, f2), truth_footers, walls):
        text = next(o["data"]["text/plain"] for o in cell.outputs if "text/plain" in o.get("data", {})
                    and "serverless vs" in o["data"]["text/plain"])
        close(shown(text, "serverless"), truth, "footer serverless")
        # a dedicated instance is paid for the cell's wall time as the kernel measured it: from the
        # keystroke's request to the footer, so it covers the backend's submitted..done (under load
        # the kernel's own steps add to it: 17% once, with two busy loops on this 2-core VM)
        kernel_wall = f["timings"]["wall"]
        assert kernel_wall >= wall - 0.01, (kernel_wall, wall)
        close(shown(text, "dedicated"), kernel_wall * per_h / 3600.0, "footer dedicated")
        assert f"{device} at Modal CPU list price 2026-10-04" in text and "GPU-s" not in text
        assert truth > 0
    assert "keep-warm idle" in next(o["data"]["text/plain"] for o in nb.cells[3].outputs
                                    if "serverless vs" in o.get("data", {}).get("text/plain", ""))

    # the report: the worker's lifetime (cold start + runs + idle) rounded up once per worker
    rep = next(o["data"] for o in nb.cells[4].outputs if report.MIME in o.get("data", {}))
    text = rep["text/plain"]
    total_s = round_billed(sum(cell_s) + idle, s_entry.granularity_s, s_entry.minimum_s)
    close(shown(text, "serverless vs"), total_s * per_s, "report serverless")
    session_wall = rows[1][3] - rows[0][2]
    ded = round_billed(session_wall, d_entry.granularity_s, d_entry.minimum_s) * per_h / 3600.0
    close(shown(text, "dedicated for the same"), ded, "report dedicated")
    close(shown(text, "each"), total_s * per_s / 2, "report per cell")
    m = re.search(r"monthly at the observed rate .*?vs \$([\d,]+\.(\d+)) dedicated", text)
    assert m and abs(float(m.group(1).replace(",", "")) - per_h * 730) <= 10.0 ** -len(m.group(2)), text
    assert "recommendation: " in text and "recommendation: none" not in text
    # the footers add up to the report's total but for the rounding per worker
    assert sum(truth_footers) <= total_s * per_s <= sum(truth_footers) + s_entry.granularity_s * per_s
    # the report's table of cells shows each footer's cost
    for p, f in zip(rep[report.MIME]["total"]["timeline"], (f1, f2)):
        assert p["cost_usd"] == pytest.approx(f["cost_usd"], abs=1e-12)

    # the sidebar: the footers' figures + the idle accrued since the last cell (the worker is warm)
    cost = state["cost"]
    accruing = cost["keep_warm_accruing_s"]
    assert before - rows[1][3] - 0.05 <= accruing <= after - rows[1][3] + 0.05
    unit = 1e-5  # the sidebar shows 5 decimals (labextension/src/model.ts costText)
    assert abs(cost["usd"] - (sum(truth_footers) + accruing * per_s)) <= unit, (cost, truth_footers)
    assert abs(cost["keep_warm_idle_s"] - (idle + accruing)) <= 0.01
    assert abs(cost["dedicated_usd"] - sum(walls) * per_h / 3600.0) <= unit
    assert cost["usd"] > 0 and cost["cells"] == 2
