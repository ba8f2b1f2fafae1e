"""The worker's owed lane-cell reports, asked for by the backend (``report``) when a kernel wants
its status: answered at once when the worker is idle, only once the running request ends else."""
from __future__ import annotations

from jupyter_gpu._wire import messages
from jupyter_gpu_worker.meter import LaneMeter


class Reports(LaneMeter):
    def __init__(self):
        self.sent: list[dict] = []
        super().__init__(self.sent.append)


def _ran(r: Reports, cell: str) -> None:
    """A lane cell arrives, runs and ends (as Agent.read_forever / serve_forever do)."""
    r.announce_later(cell)
    r.handed_over()
    r.owe({"type": messages.METERED, "cell": cell, "status": "ok", "timings": {}}, ended=0.0)
    r.request_ended()


def test_asked_while_idle_it_sends_the_owed_reports_then_reported():
    r = Reports()
    _ran(r, "c1")
    assert r.sent == []  # metered only once idle METER_IDLE, or when asked
    r.report_now()
    assert [(h["type"], h.get("cell")) for h in r.sent] == [("metered", "c1"), ("reported", None)]
    r.report_now()  # nothing more owed: only the answer
    assert [h["type"] for h in r.sent[2:]] == ["reported"]


def test_asked_while_a_request_runs_it_answers_only_when_that_request_ends():
    r = Reports()
    _ran(r, "c1")
    r.handed_over()  # the next request is running
    r.report_now()
    assert r.sent == []  # busy: the backend keeps showing it busy until it ends
    r.owe({"type": messages.METERED, "cell": "c2", "status": "ok", "timings": {}}, ended=0.0)
    r.request_ended()
    assert [(h["type"], h.get("cell")) for h in r.sent] == [("metered", "c1"), ("metered", "c2"), ("reported", None)]
    r.report()
    assert len(r.sent) == 3
