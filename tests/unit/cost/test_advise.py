"""`advise` on a synthetic trace whose answers are worked out by hand in the comments."""
from __future__ import annotations

import pytest

from jupyter_gpu.cost import advise

# $0.001/s serverless, $3.60/h (= $0.001/s) dedicated; cold start and keep-warm billed, 1 s granularity
PRICE = {"serverless_per_s": 0.001, "dedicated_per_h": 3.6, "granularity_s": 1.0, "minimum_s": 0.0,
         "dedicated_granularity_s": 1.0, "dedicated_minimum_s": 0.0,
         "profile": {"bills_cold_start": True, "bills_keep_warm": True, "unit": "worker"}}
# arrivals at 0, 2, 9, 9.5, 100 s, each running 1 s; one measured cold start of 2 s
TRACE = [{"t": t, "run": 1.0, "gpu": "H100", "cold_start": 2.0 if t == 0 else None, "price": PRICE}
         for t in (0.0, 2.0, 9.0, 9.5, 100.0)]


def run(*specs):
    a = advise.advise(TRACE, [advise.parse_scenario(s) for s in specs], lambda g: PRICE)
    g = a["gpus"]["H100"]
    assert g["cold_start_s"] == 2.0 and g["cold_start_from"] == "measured median"
    return {r["scenario"]: r for r in g["results"]}, a


def test_serverless_keep_warm_5():
    # W1 cold 0-3 (free 3, gone 8); r2 at 2: W1 busy -> W2 cold 2-5; r3 at 9: W2 idle 4 s < 5 -> warm 9-10;
    # r4 at 9.5: W2 busy, W1 gone -> W3 cold 9.5-12.5; r5 at 100: all gone -> W4 cold 100-103.
    # billed: W1 0..8 = 8, W2 2..15 = 13, W3 9.5..17.5 = 8, W4 100..108 = 8 -> 37 s = $0.037
    r, _ = run("serverless:5")
    r = r["serverless, keep-warm 5 s"]
    assert r["cost_usd"] == pytest.approx(0.037)
    assert r["cold_starts"] == 4 and r["p95_wait_s"] == 2.0  # waits 2, 2, 0, 2, 2


def test_serverless_no_keep_warm():
    # every request cold: 5 x (2 + 1) s = 15 s
    r, _ = run("serverless:0")
    r = r["serverless, keep-warm 0 s"]
    assert (r["cost_usd"], r["cold_starts"], r["p95_wait_s"]) == (pytest.approx(0.015), 5, 2.0)


def test_dedicated():
    # one GPU billed 0..101 s = $0.101; r4 waits 0.5 s behind r3 (9-10)
    r, _ = run("dedicated:1", "dedicated:2")
    one, two = r["dedicated x1"], r["dedicated x2"]
    assert (one["cost_usd"], one["cold_starts"], one["p95_wait_s"]) == (pytest.approx(0.101), 0, 0.5)
    assert (two["cost_usd"], two["p95_wait_s"]) == (pytest.approx(0.202), 0.0)


def test_hybrid():
    # r4 finds the dedicated GPU busy -> serverless cold 9.5-12.5 (3 s, no keep-warm); $0.101 + $0.003
    r, a = run("hybrid:1:0")
    r = r["hybrid: dedicated x1 + serverless burst (keep-warm 0 s)"]
    assert r["cost_usd"] == pytest.approx(0.104) and r["dedicated_usd"] == pytest.approx(0.101)
    assert (r["cold_starts"], r["p95_wait_s"]) == (1, 2.0)
    assert "(cheapest)" in advise.to_text(a)


def test_traces_from_footers_and_ledger():
    footers = [{"gpu": "A10", "started_at": 5.0, "cold": True, "timings": {"run": 1.5, "cold_start": 0.7}},
               {"gpu": "A10", "started_at": 1.0, "cold": False, "timings": {"run": 0.5, "cold_start": 0.0}}]
    tr = advise.trace_from_footers(footers)
    assert [(x["t"], x["run"], x["cold_start"]) for x in tr] == [(1.0, 0.5, None), (5.0, 1.5, 0.7)]
    ledger = {"cells": [{"submitted": 10.0, "run_s": 2.0, "gpu": "L4", "cold": 1, "cold_start_s": 3.0},
                        {"submitted": 9.0, "run_s": None, "gpu": "L4", "cold": 0}]}  # never ran: skipped
    assert advise.trace_from_ledger(ledger) == [{"t": 10.0, "run": 2.0, "gpu": "L4", "cold_start": 3.0, "price": None}]


def test_bad_scenarios_are_refused():
    for bad in ("serverless", "dedicated:0", "hybrid:1", "cloud:3", "serverless:x"):
        with pytest.raises(ValueError, match="not a scenario"):
            advise.parse_scenario(bad)
    assert advise.p95([]) == 0.0 and advise.p95([3.0, 1.0]) == 3.0
