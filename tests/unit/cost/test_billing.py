"""Cost arithmetic against hand-computed cases (rounding, minimums, profiles, keep-warm, advice)."""
from __future__ import annotations

import pytest

from jupyter_gpu.cost import billing, pricing

WORKER = {"bills_cold_start": True, "bills_keep_warm": True, "unit": "worker"}
PRICE = {"serverless_per_s": 0.001, "dedicated_per_h": 1.8, "granularity_s": 1.0, "minimum_s": 0.0,
         "dedicated_granularity_s": 1.0, "dedicated_minimum_s": 0.0, "profile": WORKER}


def rec(start, wall, run, worker, cold_start=0.0, queue=0.0, gpu="H100", price=PRICE, keep_warm=60.0, **kw):
    return {"gpu": gpu, "device": gpu, "worker": worker, "status": "ok", "cold": cold_start > 0, "started_at": start,
            "keep_warm": keep_warm, "price": price,
            "timings": {"queue": queue, "cold_start": cold_start, "run": run, "wall": wall}, **kw}


def test_round_billed():
    assert billing.round_billed(0.0, 5, 30) == 0.0  # nothing used, nothing billed
    assert billing.round_billed(2.5, 5, 30) == 30.0  # minimum
    assert billing.round_billed(31.2, 5, 30) == 35.0  # next multiple of 5
    assert billing.round_billed(35.0, 5, 30) == 35.0  # already a multiple: not one more
    assert billing.round_billed(0.2, 1, 0) == 1.0
    assert billing.round_billed(61.0, 60, 60) == 120.0  # per-minute billing


def test_cell_per_cell_unit_rounds_and_applies_the_minimum():
    price = {**PRICE, "granularity_s": 5.0, "minimum_s": 30.0, "profile": {**WORKER, "unit": "cell"}}
    c = billing.cell({"cold_start": 2.2, "run": 0.3, "wall": 12.0}, price)
    assert c["billed_seconds"] == pytest.approx(30.0)
    assert c["billed"] == pytest.approx({"cold_start": 2.2, "run": 0.3, "rounding": 27.5})
    assert c["cost_usd"] == pytest.approx(0.030)
    assert c["dedicated_usd"] == pytest.approx(12 * 1.8 / 3600)  # 0.006
    assert billing.cell({"run": 31.2, "wall": 40}, price)["billed_seconds"] == pytest.approx(35.0)


def test_cell_cold_start_not_billed_by_that_profile():
    price = {**PRICE, "profile": {**WORKER, "bills_cold_start": False}}
    c = billing.cell({"cold_start": 10.0, "run": 4.0, "queue": 3.0, "wall": 17.0}, price)
    assert c["billed_seconds"] == pytest.approx(4.0) and c["cost_usd"] == pytest.approx(0.004)
    # worker unit: a single cell is shown unrounded (the worker's lifetime is rounded once)
    assert billing.cell({"run": 0.25, "wall": 0.3}, PRICE)["billed_seconds"] == pytest.approx(0.25)


def session_three_cells():
    return [
        rec(1000.0, 10.0, 5.0, "w1", cold_start=4.0),
        rec(1030.0, 2.0, 1.5, "w1"),  # 20 s idle on w1 before it
        rec(1200.0, 6.0, 2.0, "w2", cold_start=3.0),  # w1 expired: 60 s of keep-warm billed after cell 2
    ]


def test_session_by_hand():
    s = billing.session(session_three_cells())
    assert s["phases_s"] == pytest.approx({"queue": 0, "cold_start": 7.0, "run": 8.5, "keep_warm_idle": 80.0,
                                           "rounding": 0.0})
    # w1: 9 + 1.5 + 80 idle = 90.5 -> 91; w2: 5
    assert s["billed_s"] == pytest.approx({"queue": 0, "cold_start": 7.0, "run": 8.5, "keep_warm_idle": 80.0,
                                           "rounding": 0.5})
    assert s["billed_seconds"] == pytest.approx(96.0)
    assert s["serverless_usd"] == pytest.approx(0.096)
    assert s["wall_s"] == pytest.approx(206.0) and s["busy_s"] == pytest.approx(8.5)
    assert s["utilisation"] == pytest.approx(8.5 / 206)
    assert s["dedicated_usd"] == pytest.approx(206 * 1.8 / 3600)  # 0.103
    assert s["pending_keep_warm_s"] == pytest.approx(60.0)  # after w2's last cell, not in the total
    be = s["break_even"]
    assert be["utilisation"] == pytest.approx(0.5)  # 1.8 / (3600 * 0.001)
    assert be["requests_per_month"] == pytest.approx(1.8 * 730 / 0.032)  # 41062.5
    assert s["monthly"]["serverless_usd"] == pytest.approx(0.096 / 206 * 730 * 3600)
    assert s["monthly"]["dedicated_usd"] == pytest.approx(1314.0)
    assert s["monthly"]["requests"] == pytest.approx(3 / 206 * 730 * 3600)
    r = s["recommendation"]
    assert be["utilisation_observed"] == pytest.approx(0.0005 * 8.5 / 0.096)  # 4.4%
    # 0.096 / 0.103 = 93% of dedicated: close to break-even
    assert r["choice"] == "hybrid" and "is 93% of a dedicated H100" in r["reason"]
    assert "utilisation 4% vs a break-even of 4%" in r["reason"] and "list prices the break-even utilisation is 50%" in r["reason"]
    assert any("cold starts are 45%" in n for n in r["notes"])  # 7 / (7 + 8.5)
    # each cell carries the keep-warm idle it ended (as its footer does): 20 s on w1 before cell 2,
    # w1's 60 s keep-warm before cell 3; the footers + the per-worker rounding = the total
    assert [p["keep_warm_idle"] for p in s["timeline"]] == pytest.approx([0.0, 20.0, 60.0])
    assert [p["cumulative_usd"] for p in s["timeline"]] == pytest.approx([0.009, 0.0305, 0.0955])
    assert s["timeline"][-1]["cumulative_usd"] + s["billed_s"]["rounding"] * 0.001 == pytest.approx(s["serverless_usd"])
    assert [p["t"] for p in s["timeline"]] == [0.0, 30.0, 200.0]


def test_session_keep_warm_not_billed_and_per_minute_dedicated():
    price = {**PRICE, "profile": {**WORKER, "bills_keep_warm": False},
             "dedicated_granularity_s": 60.0, "dedicated_minimum_s": 60.0}
    s = billing.session([rec(0.0, 10.0, 5.0, "w1", price=price), rec(30.0, 2.0, 1.5, "w1", price=price)])
    assert s["billed_s"]["keep_warm_idle"] == 0 and s["phases_s"]["keep_warm_idle"] == pytest.approx(20.0)
    assert s["billed_seconds"] == pytest.approx(7.0)  # 6.5 -> 7
    assert s["dedicated_usd"] == pytest.approx(60 * 1.8 / 3600)  # 32 s wall billed as a minute
    assert s["pending_keep_warm_s"] == 0


def test_sessions_of_different_notebooks_do_not_share_idle():
    a = rec(0.0, 1.0, 1.0, "w1", session="a.ipynb")
    b = rec(10.0, 1.0, 1.0, "w2", session="b.ipynb")
    s = billing.session([a, b])
    assert s["phases_s"]["keep_warm_idle"] == 0.0 and s["pending_keep_warm_s"] == pytest.approx(120.0)


def test_recommendations():
    # busy 9 of 10 s on one warm worker: 9 s billed ($0.009) vs 10 s dedicated ($0.005), steady -> dedicated
    steady = [rec(float(i), 1.0, 0.9, "w1") for i in range(10)]
    r = billing.session(steady)["recommendation"]
    assert r["choice"] == "dedicated" and "is 180% of a dedicated" in r["reason"] and "steady" in r["reason"]
    # same cost ratio but bursty gaps -> hybrid
    bursty = [rec(t, 0.5, 0.5, "w1") for t in (0.0, 0.6, 1.2, 9.0, 9.6)]
    r = billing.session(bursty)["recommendation"]
    assert r["choice"] == "hybrid" and "bursty" in r["reason"]
    # scale to zero between cells: 4 + 1 s billed ($0.005) vs 12 s dedicated ($0.006) = 83% -> hybrid
    near = [rec(0.0, 4.0, 4.0, "w1", keep_warm=0.0), rec(11.0, 1.0, 1.0, "w2", keep_warm=0.0)]
    r = billing.session(near)["recommendation"]
    assert r["choice"] == "hybrid" and "is 83% of a dedicated" in r["reason"]
    # own box at $0/h
    own = {**PRICE, "dedicated_per_h": 0.0}
    r = billing.session([rec(0.0, 1.0, 0.1, "w1", price=own)])["recommendation"]
    assert r["choice"] == "dedicated" and "$0/h" in r["reason"]
    # a dedicated GPU dearer than serverless busy all the time: $0.001 vs $0.002 -> serverless
    dear = {**PRICE, "dedicated_per_h": 7.2}
    r = billing.session([rec(0.0, 1.0, 1.0, "w1", price=dear)])["recommendation"]
    assert r["choice"] == "serverless" and "break-even utilisation is 200%" in r["reason"]
    assert any("short session" in n for n in r["notes"])


def test_right_size_from_peak_memory(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("JUPYTER_GPU_PRICES", raising=False)
    pricing.reload()
    h100 = pricing.price_for("H100").as_dict()
    r = rec(0.0, 1.0, 1.0, "w1", price=h100, telemetry={"peak_memory_bytes": 11 * 1024**3})
    rs = billing.session([r])["right_size"]
    # 11 GiB * 1.1 headroom fits the 16 GiB T4, Modal $0.000164/s vs $0.001097/s
    assert rs["fits"] == "T4" and rs["price_ratio"] == pytest.approx(0.000164 / 0.001097)
    assert rs["text"].startswith("peak 11.0 GiB: fits a T4 (16 GiB) at 15% of the price")
    assert billing.session([rec(0.0, 1.0, 1.0, "w1", price=h100)])["right_size"] is None  # no telemetry, no claim
    big = rec(0.0, 1.0, 1.0, "w1", price=h100, telemetry={"peak_memory_bytes": 70 * 1024**3})
    assert "fits an A100-80GB (80 GiB) at 63% of the price" in billing.session([big])["right_size"]["text"]
    t4 = rec(0.0, 1.0, 1.0, "w1", gpu="T4", price=pricing.price_for("T4").as_dict(),
             telemetry={"peak_memory_bytes": 10 * 1024**3})
    assert "T4 is already the cheapest GPU that fits" in billing.session([t4])["right_size"]["text"]
