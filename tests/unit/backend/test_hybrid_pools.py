"""Hybrid pools, pure logic: the --dedicated and --config parsers, and how a cell that ran on the
dedicated pool is billed (its share of the hourly price, never per second as serverless)."""
from __future__ import annotations

import pytest

from jupyter_gpu.cost import billing, footer
from jupyter_gpu_backend.config import BackendConfig, load_config_file
from jupyter_gpu_backend.scheduling.dedicated import parse_sizes

WORKER = {"bills_cold_start": True, "bills_keep_warm": True, "unit": "worker"}
PRICE = {"serverless_per_s": 0.001, "dedicated_per_h": 1.8, "granularity_s": 1.0, "minimum_s": 0.0,
         "dedicated_granularity_s": 1.0, "dedicated_minimum_s": 0.0, "profile": WORKER}


def rec(start, wall, run, worker, cold_start=0.0, **kw):
    return {"gpu": "H100", "device": "H100", "worker": worker, "status": "ok", "cold": cold_start > 0,
            "started_at": start, "keep_warm": 60.0, "price": PRICE,
            "timings": {"queue": 0.0, "cold_start": cold_start, "run": run, "wall": wall}, **kw}


def test_parse_sizes():
    assert parse_sizes("cpu=1, H100=2") == {"cpu": 1, "H100": 2}
    assert parse_sizes("cpu=0") == {} and parse_sizes("") == {} and parse_sizes(None) == {}
    for bad in ("cpu", "cpu=x", "=2", "cpu=-1"):
        with pytest.raises(ValueError, match="use GPU=N"):
            parse_sizes(bad)


def test_config_file(tmp_path):
    p = tmp_path / "serve.toml"
    p.write_text("keep_warm = 30\nmax_workers = 4\nscale_up_queue = 2\ntarget_utilisation = 0.7\n"
                 "[pools.cpu]\ndedicated = 1\n[pools.H100]\ndedicated = 2\n")
    c = BackendConfig()
    load_config_file(str(p), c)
    assert c.keep_warm == 30.0 and c.max_workers == 4 and c.dedicated == {"cpu": 1, "H100": 2}
    assert c.scale_up_queue == 2 and c.target_utilisation == 0.7
    p.write_text("kep_warm = 30\n")
    with pytest.raises(ValueError, match="unknown setting 'kep_warm'"):
        load_config_file(str(p), BackendConfig())
    p.write_text("[pools.cpu]\nspares = 1\n")
    with pytest.raises(ValueError, match=r"\[pools.cpu\] takes only dedicated"):
        load_config_file(str(p), BackendConfig())


def test_a_dedicated_cell_is_its_share_of_the_hourly_price_not_serverless_seconds():
    t = {"cold_start": 0.0, "run": 10.0, "wall": 12.0}
    c = billing.cell(t, PRICE, "dedicated")
    assert c["billed_seconds"] == 0.0 and c["billing"] == "dedicated"
    assert c["cost_usd"] == pytest.approx(10.0 * 1.8 / 3600)  # not 10 s x $0.001 serverless
    assert billing.cell(t, PRICE)["cost_usd"] == pytest.approx(0.010)  # the serverless figure, unchanged


def test_session_keeps_the_pool_out_of_serverless_and_its_idle_out_of_the_session():
    recs = [rec(0, 10, 10, "w-d", pool="dedicated"), rec(40, 10, 10, "w-d", pool="dedicated"),
            rec(60, 5, 4, "w-s", cold_start=1.0)]
    s = billing.session(recs)
    assert s["dedicated_pool_usd"] == pytest.approx(20 * 1.8 / 3600)
    # serverless: only w-s (cold 1 + run 4, rounded per worker to 5 s) + nothing of w-d's 30 s idle
    assert s["serverless_usd"] == pytest.approx(5 * 0.001)
    assert s["pending_keep_warm_s"] == pytest.approx(60.0)  # w-s's tail only; w-d's is the pool's


def test_footer_says_which_pool():
    done = {"status": "ok", "gpu": "cpu", "device": "cpu (2 cores)", "worker": "w-1", "cold": False,
            "timings": {"run": 0.5}, "pool": "dedicated"}
    f = footer.build(done, 0.6, {})
    assert f["pool"] == "dedicated" and f["billed_seconds"] == 0.0
    assert "pool: dedicated" in footer.text(f) and "serverless" not in footer.text(f)
    f = footer.build({**done, "pool": None, "cold": True, "timings": {"cold_start": 0.1, "run": 0.5}}, 0.7, {})
    assert f["pool"] == "serverless" and "pool: serverless" in footer.text(f)


def test_budgets_charge_a_dedicated_cell_its_share_of_the_hourly_price():
    from jupyter_gpu.cost.pricing import price_for
    from jupyter_gpu_backend.accounting.budgets import Budgets
    from jupyter_gpu_backend.accounting.ledger import NullLedger

    b = Budgets(session_budget=100.0)
    led = b.wrap(NullLedger())
    for cid, pool in (("c-d", "dedicated"), ("c-s", "serverless")):
        led.cell_started(cid, "s", "u", "H100")
        led.cell_pool(cid, pool)  # the scheduler says the pool before cell_done
        led.cell_done(cid, "ok", "w", False, {"run": 10.0})
    price = price_for("H100").as_dict()
    share = 10.0 * price["dedicated_per_h"] / 3600
    serverless = billing.cell({"run": 10.0}, price)["cost_usd"]
    assert share != pytest.approx(serverless)  # the two prices differ, so the test tells them apart
    assert b.spent[("session", "s")] == pytest.approx(share + serverless)


def test_the_config_file_chooses_the_runtime(tmp_path):
    p = tmp_path / "serve.toml"
    p.write_text('runtime = "docker"\n')
    c = BackendConfig()
    load_config_file(str(p), c)
    assert c.runtime == "docker"
    p.write_text('runtime = "kubernetes"\n')
    with pytest.raises(ValueError, match="runtime must be one of docker, local, ray"):
        load_config_file(str(p), BackendConfig())
