"""A map's live progress in the calling cell (``f.map`` / ``starmap`` / ``for_each``): how many of
its items are queued (read from the input, not sent yet), starting (their batch waits for a worker:
in the backend's queue or a cold start), running, done and failed, and what its calls cost so far.

Where it shows: in a Jupyter kernel (ipykernel: a frontend may be attached) with ipywidgets, a
widget - a bar (done of the items known so far: all of them when the input has a len()) and a
label of the counts - whose display also carries the same counts as text/plain, so nbclient,
`jupyter-gpu run` and a notebook saved without its widget state read them; elsewhere (no
ipywidgets, a terminal IPython) that line alone, a text/HTML display updated in place.

Cheap by design: counts are kept per batch, never per item, and the display is refreshed at most
every ``every`` seconds (and when a batch starts waiting for a worker), only from the thread that
reads the map's results: widgets' traitlets are not thread-safe, and that thread's cell is the one
the kernel publishes under.  A batch's phases arrive on whichever thread drives it (fanout.py's):
they only change the counts, which that thread shows at its next refresh.
"""
from __future__ import annotations

import html
import threading
import time

from jupyter_gpu.cost import footer
from jupyter_gpu.notebook import sink
from jupyter_gpu.notebook.publish import Publisher

EVERY = 0.1  # seconds between two refreshes (a widget update is 2 comm messages; per item it would be thousands)
TERMINAL_EVERY = 1.0  # a terminal IPython prints each refresh as a new line
SHOW_AFTER = 0.5  # a map still going after this long shows its progress (at once: one that waits for a worker)
WAITING = ("queued", "cold_start")  # a batch's phases (messages.Phase) before its worker runs it


class Batch:
    """One batch's place in the counts: its size, its state, the requests (attempts) it went as."""

    __slots__ = ("n", "state", "cells")

    def __init__(self, n: int):
        self.n, self.state, self.cells = n, "queued", []


class Progress:
    """The progress of one map: told by call.MapResult (and fanout.py) as its batches are read,
    sent and done; ``close`` shows the final counts."""

    def __init__(self, session, name: str, total: int | None = None):
        self.session, self.name, self.total = session, name, total
        self.lock = threading.Lock()
        self.thread = threading.get_ident()  # the map's reader: the only one that publishes
        self.batches: dict[int, Batch] = {}  # id(batch list) -> Batch, read and not done yet
        self.read = self.done = self.failed = 0  # items read from the input; run; raised
        self.t0 = time.monotonic()
        self.next = 0.0  # no refresh before this (time.monotonic())
        self.shown = False
        self.id = f"jgpu-map-{session.id}-{session.new_cell_id()}"
        self.calls_before = len(session.cell_calls)
        self.widgets = _widgets(session.shell)
        self.every = EVERY if getattr(session.shell, "kernel", None) is not None else TERMINAL_EVERY
        self.bar = self.label = self.box = None

    # -- what the map tells it ------------------------------------------------------------------------
    def counted(self, batches):
        """The map's batches as they are read from its input, each counted as queued."""
        for batch in batches:
            with self.lock:
                self.batches[id(batch)] = Batch(len(batch))
                self.read += len(batch)
            yield batch

    def sent(self, batch: list):
        """``on_sent(conn, cell)`` for ``batch``'s attempts (call._run's): it runs, unless its
        phases say it waits for a worker (the notebook's sink reports them: sink.PHASES)."""
        b = self.batches[id(batch)]

        def on_sent(conn, cell: str) -> None:
            with self.lock:
                b.state = "running"  # (a warm worker's request has no phase events)
            for c in b.cells:  # an earlier attempt's
                sink.PHASES.pop(c, None)
            b.cells.append(cell)
            sink.PHASES[cell] = lambda phase: self.phase(b, phase)
            self.refresh()

        return on_sent

    def phase(self, b: Batch, phase: str) -> None:
        with self.lock:
            b.state = "starting" if phase in WAITING else "running"
        self.refresh(force=True)  # (rare: at most a few a batch)

    def ran(self, batch: list, results: list) -> None:
        """A batch's results came (all of its items', or those before a stop)."""
        failed = sum(1 for ok, _ in results if not ok)
        with self.lock:
            b = self.batches.pop(id(batch), None)
            self.failed += failed
            self.done += len(results) - failed
        for c in (b.cells if b is not None else ()):
            sink.PHASES.pop(c, None)
        self.refresh()

    def tick(self) -> None:
        """The map's thread waits for a batch (fanout.py): show what changed meanwhile."""
        self.refresh()

    def close(self, complete: bool) -> None:
        """The map ended (complete: every item read and run; else stopped or left part-way): its
        final counts, where it was shown."""
        with self.lock:
            left, self.batches = list(self.batches.values()), {}
        for b in left:
            for c in b.cells:
                sink.PHASES.pop(c, None)
        if self.shown:
            self._show(final=True, complete=complete)

    # -- the display ------------------------------------------------------------------------------------
    def counts(self) -> dict:
        with self.lock:
            n = {"queued": 0, "starting": 0, "running": 0}
            for b in self.batches.values():
                n[b.state] += b.n
            n["done"], n["failed"] = self.done, self.failed
        return n

    def line(self, n: dict) -> str:
        cost = sum(f.get("cost_usd") or 0.0 for f in self.session.cell_calls[self.calls_before:])
        states = " · ".join(f"{n[s]} {s}" for s in ("queued", "starting", "running", "done", "failed"))
        return f"map {self.name}: {states} · {footer.usd(cost)} so far"

    def refresh(self, force: bool = False) -> None:
        if threading.get_ident() != self.thread:
            return
        now = time.monotonic()
        if now < self.next and not force:
            return
        if not self.shown:
            with self.lock:
                going = bool(self.batches)
                waits = any(b.state == "starting" for b in self.batches.values())
            # a map over in under SHOW_AFTER is not shown (gone before anyone could read it, and a
            # widget's making costs a few ms: a 10,000-item map of trivial items takes ~70 ms)
            if not going or not (waits or now - self.t0 >= SHOW_AFTER):
                return
        self.next = now + self.every
        self._show()

    def _show(self, final: bool = False, complete: bool = False) -> None:
        n = self.counts()
        line = self.line(n)
        pub = Publisher(self.session.shell)
        if self.widgets is not None:
            try:
                return self._show_widget(pub, n, line, final, complete)
            except Exception:  # a broken widgets install: the text line, as without one
                self.widgets = None
                if self.box is not None:  # (its display is a widget view: a new display for the line)
                    self.shown, self.id = False, self.id + "-text"
        data = {"text/plain": line, "text/html": f'<div class="jupyter-gpu-map {footer.NO_MATH}" '
                f'style="font:12px monospace">{html.escape(line)}</div>'}
        pub.display(data, {}, {"display_id": self.id}, update=self.shown)
        self.shown = True

    def _show_widget(self, pub: Publisher, n: dict, line: str, final: bool, complete: bool) -> None:
        W = self.widgets
        known = max(self.total or 0, self.read)
        label = f'<span class="{footer.NO_MATH}" style="font:12px monospace">{html.escape(line)}</span>'
        if self.box is None:
            self.bar = W.IntProgress(value=n["done"] + n["failed"], min=0, max=max(known, 1),
                                     layout=W.Layout(width="240px"))
            self.label = W.HTML(value=label)
            self.box = W.HBox([self.bar, self.label])
        else:
            with self.bar.hold_sync():
                self.bar.max = max(known, 1)
                self.bar.value = n["done"] + n["failed"]
                if final:
                    self.bar.bar_style = "danger" if n["failed"] else ("success" if complete else "warning")
            self.label.value = label
        if self.shown and not final:
            return  # the widget's own messages updated it; the text line is brought up to date at the end
        view = {"version_major": 2, "version_minor": 0, "model_id": self.box.model_id}
        pub.display({"text/plain": line, "application/vnd.jupyter.widget-view+json": view}, {},
                    {"display_id": self.id}, update=self.shown)
        self.shown = True


def _widgets(shell):
    """ipywidgets, in a kernel whose frontend can show a widget (ipykernel's shell); else None."""
    if getattr(shell, "kernel", None) is None or not hasattr(shell.display_pub, "pub_socket"):
        return None
    try:
        import ipywidgets
    except ImportError:
        return None
    return ipywidgets


def known_total(items) -> int | None:
    """How many items a map's input has, when it says (a list, a range, map()'s zip of them)."""
    try:
        return len(items)
    except TypeError:
        return None
