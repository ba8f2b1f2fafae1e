"""The driver of one request's events (jupyter_gpu/_client/driver.py), over a real connection: a
worker's lane on a Unix socket pair, whose other end plays the worker (and a second pair the
backend).  The sink records what it was handed."""
from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from jupyter_gpu._client import driver
from jupyter_gpu._wire import lane, messages
from jupyter_gpu.errors import NoSuchDevice

CELL = "k-1.0"


class Status:
    def __init__(self, log):
        self.log, self.next_tick = log, time.monotonic() + 3600

    def tick(self):
        pass

    def show(self, phase, position=None, detail=None):
        self.log.append(("show", phase, position))

    def clear(self):
        self.log.append(("clear",))


class Sink:
    """Records every call the driver makes, in order."""

    def __init__(self, answer="42"):
        self.log, self.answer = [], answer

    def stream(self, name, text):
        self.log.append(("stream", name, text))

    def output(self, header, buffers):
        self.log.append(("output", header["data"]))

    def clear_output(self, wait):
        self.log.append(("clear_output", wait))

    def error(self, header, buffers):
        self.log.append(("error", header["ename"]))

    def ask(self, header, sigint_handler, deadline):
        self.log.append(("ask", header["prompt"], deadline))
        return {"type": messages.INPUT_REPLY, "value": self.answer}

    def waiting(self):
        self.log.append(("waiting",))
        return Status(self.log)

    def resent(self, header):
        self.log.append(("resent", header.get("files", False)))

    def done(self, msg):
        self.log.append(("done", msg.header["status"]))
        return msg.header


@pytest.fixture
def pair():
    """(the kernel's end, the worker's end) of a lane; and (the kernel's, the backend's) of another."""
    ends = [lane.LaneConnection(s) for s in (*socket.socketpair(), *socket.socketpair())]
    yield ends
    for end in ends:
        end.close()


def drive(sink, conn, backend, gpu="cpu", **limits):
    return driver.drive(sink, conn, CELL, backend=backend, gpu=gpu, image="default", t0=time.monotonic(),
                        **limits)


def test_events_reach_the_sink_in_order_and_the_final_one_ends_the_request(pair):
    kernel, worker, backend, _ = pair
    for header in ({"type": messages.PHASE, "phase": "queued", "position": 2},
                   {"type": messages.STREAM, "cell": CELL, "name": "stdout", "text": "hi\n"},
                   {"type": messages.STREAM, "cell": "k-0.0", "name": "stdout", "text": "late\n"},
                   {"type": messages.DISPLAY, "cell": CELL, "data": {"text/plain": "1"}, "metadata": {}},
                   {"type": messages.CLEAR_OUTPUT, "cell": CELL, "wait": True},
                   {"type": messages.ERROR, "cell": CELL, "ename": "ValueError", "evalue": "no"},
                   messages.done(CELL, "resend"),  # a resend's own done is not the end
                   messages.done(CELL, "error")):
        worker.send(header)
    sink = Sink()
    assert drive(sink, kernel, backend)["status"] == "error"
    assert sink.log == [("waiting",), ("show", "queued", 2), ("stream", "stdout", "hi\n"),
                        ("output", {"text/plain": "1"}), ("clear_output", True), ("error", "ValueError"),
                        ("clear",), ("done", "error")]


def test_a_request_whose_end_is_already_there_is_taken_without_waiting(pair):
    kernel, worker, backend, _ = pair
    worker.send(messages.done(CELL, "ok"))
    before = signal.getsignal(signal.SIGINT)
    sink = Sink()
    assert drive(sink, kernel, backend)["status"] == "ok"
    assert sink.log == [("done", "ok")]  # no live status
    assert signal.getsignal(signal.SIGINT) is before


def test_resend_and_failure(pair):
    kernel, worker, backend, _ = pair
    worker.send({"type": messages.RESEND, "cell": CELL, "names": ["x"]})
    sink = Sink()
    assert drive(sink, kernel, backend) is None  # pack and send the inputs again
    assert sink.log[-1] == ("resent", False)
    worker.send({"type": messages.RESEND, "cell": CELL, "names": [], "files": True})
    worker.send({**messages.done(CELL, "resend"), "cold": True})  # where that attempt ran
    sink = Sink()
    assert drive(sink, kernel, backend) is None  # and the kernel's directory with it
    assert sink.log[-1] == ("resent", False)  # the done's (the sink reads its `cold`)
    worker.send(messages.failure(NoSuchDevice.code, "no H100 here"))
    sink = Sink()
    with pytest.raises(NoSuchDevice, match="no H100 here"):
        drive(sink, kernel, backend)
    assert sink.log == [("waiting",), ("clear",)]


def test_input_is_asked_with_the_timeouts_deadline_and_answered_to_the_cell(pair):
    kernel, worker, backend, _ = pair
    worker.send({"type": messages.INPUT_REQUEST, "cell": CELL, "prompt": "n? ", "password": False})
    worker.send(messages.done(CELL, "ok"))
    t0 = time.monotonic()
    sink = Sink()
    driver.drive(sink, kernel, CELL, backend=backend, gpu="cpu", image=None, t0=t0, timeout=30)
    assert ("ask", "n? ", t0 + 30) in sink.log
    reply = worker.recv(1)
    assert reply.header == {"type": messages.INPUT_REPLY, "value": "42", "cell": CELL}


def test_max_cost_where_no_price_is_set_says_it_cannot_bite(pair):
    kernel, worker, backend, _ = pair
    worker.send(messages.done(CELL, "ok"))
    sink = Sink()
    drive(sink, kernel, backend, gpu="Z9", max_cost=0.5)  # a type the catalog has no price for (cpu has one)
    assert sink.log[0][:2] == ("stream", "stderr") and "has no effect" in sink.log[0][2]


def _answer(conn, then, replies):
    """The worker's (or the backend's) end: wait for one message, note it, then send ``then``."""
    def run():
        msg = conn.recv(10)
        replies.append(msg.header if msg is not None else None)
        if then is not None:
            then()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_timeout_interrupts_the_cell_and_its_events_still_come(pair):
    kernel, worker, backend, _ = pair
    got = []

    def stopped():
        worker.send({"type": messages.STREAM, "cell": CELL, "name": "stderr", "text": "KeyboardInterrupt\n"})
        worker.send(messages.done(CELL, "interrupted"))

    t = _answer(worker, stopped, got)
    sink = Sink()
    assert drive(sink, kernel, backend, timeout=0.2)["status"] == "interrupted"
    t.join(5)
    assert got == [{"type": messages.INTERRUPT, "cell": CELL}]
    assert ("stream", "stderr", "KeyboardInterrupt\n") in sink.log


def test_the_stop_button_interrupts_and_a_second_press_asks_the_backend_to_kill(pair):
    kernel, worker, backend, backend_end = pair
    before = signal.getsignal(signal.SIGINT)
    interrupts, kills = [], []

    def press():
        while signal.getsignal(signal.SIGINT) is before:  # until the driver traps it
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGINT)

    def killed():
        worker.send(messages.done(CELL, "killed"))

    _answer(worker, press, interrupts)  # a press: the interrupt, then a second press
    _answer(backend_end, killed, kills)
    threading.Thread(target=press, daemon=True).start()
    assert drive(Sink(), kernel, backend)["status"] == "killed"
    assert interrupts == [{"type": messages.INTERRUPT, "cell": CELL}]
    assert kills == [{"type": messages.KILL, "cell": CELL, "gpu": "cpu", "image": "default"}]
    assert signal.getsignal(signal.SIGINT) is before  # the kernel's own handler is back
