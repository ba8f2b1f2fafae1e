"""The worker's Emitter: stream text in order, and text printed between cells kept for the next."""
from __future__ import annotations

import threading

from jupyter_gpu_worker import events
from jupyter_gpu_worker.events import Emitter


class Sink:
    def __init__(self):
        self.events, self.cond = [], threading.Condition()

    def __call__(self, header, buffers):
        with self.cond:
            self.events.append(header)
            self.cond.notify_all()

    def wait_for(self, predicate, timeout=5.0):
        with self.cond:
            assert self.cond.wait_for(lambda: predicate(self.events), timeout), self.events

    def text(self, cell):
        return "".join(e["text"] for e in self.events if e["type"] == "stream" and e["cell"] == cell)


def test_text_printed_between_cells_opens_the_next_cell_and_nothing_is_lost():
    sink = Sink()
    em = Emitter(sink)
    em.cell = "c1"
    em.write_stream("stdout", "in c1\n")
    em.end({"type": "done"})
    em.write_stream("stdout", "late, from a thread\n")  # after c1's done, before c2
    em.flush()  # nothing runs: it is not sent, and not dropped
    assert [e["type"] for e in sink.events] == ["stream", "done"]
    em.cell = "c2"
    em.write_stream("stdout", "in c2\n")
    em.end({"type": "done"})
    assert sink.text("c1") == "in c1\n"
    assert sink.text("c2") == "late, from a thread\nin c2\n"
    assert sink.events[-1] == {"type": "done", "cell": "c2"}


def test_text_between_cells_is_bounded_and_what_did_not_fit_is_said(monkeypatch):
    monkeypatch.setattr(events, "BETWEEN_CELLS_MAX", 10)
    sink = Sink()
    em = Emitter(sink)
    for i in range(5):
        em.write_stream("stdout", f"line {i}\n")  # 7 characters each
    em.cell = "c"
    sink.wait_for(lambda events: any("line 4" in e.get("text", "") for e in events))
    em.end({"type": "done"})
    assert "line 4\n" in sink.text("c") and "line 0" not in sink.text("c")
    note = "".join(e["text"] for e in sink.events if e["type"] == "stream" and e["name"] == "stderr")
    assert "28 characters printed between cells did not fit" in note
