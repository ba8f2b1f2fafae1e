"""The footer of a cell that made function calls: one, adding up the calls (functions/call.py)."""
from __future__ import annotations

from jupyter_gpu.cost import footer


def _done(cold: bool, run: float, status: str = "ok") -> dict:
    return {"status": status, "gpu": "cpu", "device": "cpu (2 cores)", "worker": "w-1", "cold": cold,
            "timings": {"queue": 0.0, "cold_start": 0.3 if cold else 0.0, "load": 0.0, "exec": run, "post": 0.0,
                        "run": run}}


def test_calls_add_up_to_what_each_cost_and_the_text_says_how_many():
    calls = [footer.build(_done(True, 0.5), 0.9, {"sent_bytes": 100, "received_bytes": 10}),
             footer.build(_done(False, 0.25, "error"), 0.3, {"sent_bytes": 20, "received_bytes": 5})]
    f = footer.summed(calls)
    assert f["calls"] == 2 and f["status"] == "error" and f["cold"] is True
    assert f["cost_usd"] == sum(c["cost_usd"] for c in calls) > 0
    assert f["billed_seconds"] == sum(c["billed_seconds"] for c in calls)
    assert f["timings"]["run"] == 0.75 and f["timings"]["wall"] == 0.9 + 0.3
    assert f["transfer"] == {"sent_bytes": 120, "received_bytes": 15}
    assert "2 function calls" in footer.text(f)
    assert "1 function call " in footer.text(footer.summed(calls[:1]))
