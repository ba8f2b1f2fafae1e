"""10,000 generated messages (tests/fuzz/strategies.py: a kernel's requests with hostile fields,
other sides' types, unknown types, broken frames, payloads that do not add up) sent raw to a real
backend on 127.0.0.1, then: the backend still serves a normal cell, no ledger row is left
`running`, and nothing it answered was other than a known failure code naming the cause, or a close
(1002 / 1009) with a reason - never a crash (1011, a traceback in its log) or a hang (issue 25).

Bounded: 1000 batches of 10 messages, each batch answered within BATCH_S; derandomized.
"""
from __future__ import annotations

import itertools
import os
import time

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from jupyter_gpu._wire import framing, messages
from jupyter_gpu.errors import ERRORS_BY_CODE

from tests.integration.backend_process import api_get, start_backend, stop_backend

from .strategies import first_frame, kernel_message

TOKEN = "fuzz-token"
BATCHES = int(os.environ.get("FUZZ_BATCHES", "1000"))  # (fewer for a quick look)
PER_BATCH = 10  # (hypothesis's choices for 10 messages fit its buffer; 100 overran it, and were slow)
BATCH_S = 60  # a batch's answers, at most (a hang fails the test here)
pytestmark = pytest.mark.timeout(600)
_ids = itertools.count()


class Door:
    """A raw kernel connection to the backend, opened again (same session) when the backend closes it."""

    def __init__(self, url: str):
        self.url = url.replace("http", "ws", 1) + "/ws/session/s-fuzz"
        self.closes: list[tuple[int, str]] = []
        self.failures: list[dict] = []
        self.sent = 0
        self._open()

    def _open(self) -> None:
        self.ws = connect(self.url, additional_headers={"Authorization": f"token {TOKEN}"}, max_size=None,
                          compression=None, open_timeout=10, legacy=True)
        assert self.header(self.ws.recv(timeout=10))["type"] == messages.WELCOME

    @staticmethod
    def header(frame) -> dict:
        return framing.parse_first(frame)[0]

    def batch(self, batch: list[list[bytes]]) -> None:
        """Send each message followed by a sentinel (an unknown type: answered in order, naming it) and
        read to the last sentinel's answer.  A close names the message that caused it (the one after
        the last sentinel answered): the rest of the batch goes again on a new connection."""
        while batch:
            batch = self._send_and_read(batch)

    def _send_and_read(self, batch: list[list[bytes]]) -> list[list[bytes]]:
        base = next(_ids) * 1000
        try:
            for i, frames in enumerate(batch):
                for f in frames:
                    self.ws.send(f)
                self.ws.send(first_frame(b'{"type":"sentinel-%d"}' % (base + i)))
        except ConnectionClosed:
            pass  # the backend closed it on a bad frame: read what it said, below
        done = -1  # the last message whose sentinel was answered
        deadline = time.monotonic() + BATCH_S
        while done < len(batch) - 1:
            try:
                frame = self.ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                raise AssertionError(f"the backend did not answer within {BATCH_S} s after message "
                                     f"{batch[done + 1][0][:300]!r}") from None
            except ConnectionClosed:
                code, reason = self.ws.close_code, self.ws.close_reason
                culprit = batch[done + 1][0][:300]
                assert code in (1002, 1009) and reason, f"closed with {code} {reason!r} after {culprit!r}"
                self.closes.append((code, reason))
                self.sent += done + 2
                self._open()
                return batch[done + 2 :]
            h = self.header(frame)
            assert h["type"] in messages.TYPES, h
            if h["type"] == messages.FAILURE:
                assert h.get("code") in ERRORS_BY_CODE and h.get("message"), (h, batch[done + 1][0][:300])
                if h["message"].startswith("unknown message type 'sentinel-"):
                    done = int(h["message"].split("-")[1].rstrip("'")) - base
                else:
                    self.failures.append(h)
        self.sent += len(batch)
        return []


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz-backend")
    # few workers, kept warm briefly: a cell the fuzzing sends while its session's worker is busy waits
    # in line for a worker another lease keeps warm (the design), and the test stays bounded
    proc, url = start_backend(d, "--token", TOKEN, "--max-payload", str(1 << 20), "--keep-warm", "3",
                              "--max-workers", "3", "--max-queued-per-user", "4")
    yield proc, url, d
    stop_backend(proc)


def _ledger(url: str) -> list[dict]:
    return api_get(url, TOKEN, "/api/cells?limit=10000")["cells"]


@pytest.mark.parametrize("extra", [
    {"call": {"fn": [1], "name": {}}},  # crashed the door before (function_label: 'list' has no .get)
    {"call": {"fn": {"h": [1]}, "name": "f"}},
    {"image_spec": {"base": 5, "layers": "x", "hashes": [1], "name": None}},
    {"sync": {"root": 5, "put": [[1]], "drop": 3}},
    {"comm": {"msg_type": 5}},
], ids=["call-fn-list", "call-fn-hash-list", "image-spec", "sync", "comm"])
def test_an_untyped_field_of_the_wrong_shape_fails_only_its_cell(backend, extra):
    """The fields the protocol leaves untyped (`dict[str, Any]`), holding what their readers do not
    expect: the cell ends (an error or a failure saying why), the connection stays, the next cell runs."""
    proc, url, d = backend
    ws = connect(url.replace("http", "ws", 1) + "/ws/session/s-shapes",
                 additional_headers={"Authorization": f"token {TOKEN}"}, open_timeout=10, legacy=True)
    assert Door.header(ws.recv(timeout=10))["type"] == messages.WELCOME
    for cell, fields in (("odd", extra), ("next", {})):
        ws.send(framing.encode({"type": "execute", "cell": cell, "code": "print('ran')", "gpu": "cpu", "inputs": {},
                                "keep": {}, "binds": [], **fields})[0])
        while (h := Door.header(ws.recv(timeout=60))).get("cell") != cell or h["type"] not in (
                messages.DONE, messages.FAILURE):
            assert h["type"] != messages.FAILURE or h.get("code") in ERRORS_BY_CODE, h
        assert h["type"] == messages.FAILURE or h["status"] in ("ok", "error"), h
        if cell == "next":
            assert h["type"] == messages.DONE and h["status"] == "ok", h
    ws.close()


def test_what_the_backend_adds_to_a_cell_is_not_a_kernels_to_say(backend, tmp_path):
    """A kernel's `uid` made its worker become that user before the cell (a runtime without a
    sandbox adds none of its own), its `follow` put a directory of its choice before the worker's
    site-packages: both are the backend's fields, dropped from what a kernel sends."""
    import os

    proc, url, d = backend
    ws = connect(url.replace("http", "ws", 1) + "/ws/session/s-added",
                 additional_headers={"Authorization": f"token {TOKEN}"}, open_timeout=10, legacy=True)
    assert Door.header(ws.recv(timeout=10))["type"] == messages.WELCOME
    code = f"import os, sys\nprint(os.getuid(), {str(tmp_path)!r} in sys.path)"
    ws.send(framing.encode({"type": "execute", "cell": "added", "code": code, "gpu": "cpu", "inputs": {}, "keep": {},
                            "binds": [], "uid": os.getuid() + 4242, "follow": str(tmp_path)})[0])
    events = []
    while not events or events[-1]["type"] not in (messages.DONE, messages.FAILURE):
        h = Door.header(ws.recv(timeout=60))
        if h.get("cell") == "added":
            events.append(h)
    assert [e["text"] for e in events if e["type"] == "stream"] == [f"{os.getuid()} False\n"], events
    ws.close()


# last: what it leaves (spawned calls kept warm by a fuzzed keep-warm) may hold the few workers
def test_ten_thousand_hostile_messages_then_a_normal_cell(backend):
    proc, url, d = backend
    door = Door(url)

    @settings(derandomize=True, database=None, deadline=None, max_examples=BATCHES, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(batch=st.lists(kernel_message(), min_size=PER_BATCH, max_size=PER_BATCH))
    def fuzz(batch):
        door.batch(batch)
        assert proc.poll() is None, "the backend exited"

    t0 = time.monotonic()
    fuzz()
    assert door.sent == BATCHES * PER_BATCH, door.sent
    codes = {h["code"] for h in door.failures}
    assert "bad_request" in codes and door.closes, (codes, door.closes)  # the fuzzing reached both answers
    print(f"fuzz: {door.sent} messages in {time.monotonic() - t0:.0f} s, {len(door.failures)} failures "
          f"{sorted(codes)}, {len(door.closes)} closes")

    t1 = time.monotonic()
    # the fuzzed session gives back its workers, as a kernel's `%gpu release` does (a fuzzed keep-warm
    # may hold them for hours, and a cell the session sent while its worker was busy waits in line)
    door.ws.send(framing.encode({"type": messages.RELEASE})[0])
    while (h := Door.header(door.ws.recv(timeout=60)))["type"] != messages.STATUS_REPLY or "released" not in h:
        pass
    # no cell is left running: each ends (a worker's answer, an interrupt, a kill) within its bound
    deadline = time.monotonic() + 60
    while (stuck := [c for c in _ledger(url) if c["status"] in ("running", "queued", "started")]):
        assert time.monotonic() < deadline, f"ledger rows left {stuck[0]['status']}: {stuck[:3]}"
        time.sleep(0.2)  # polling another process's ledger: there is no event to wait on
    print(f"fuzz: ledger settled in {time.monotonic() - t1:.1f} s")

    # and the backend still serves a normal cell, in a new session and in the fuzzed one
    for session in ("s-after", "s-fuzz"):
        ws = connect(url.replace("http", "ws", 1) + f"/ws/session/{session}",
                     additional_headers={"Authorization": f"token {TOKEN}"}, open_timeout=10, legacy=True)
        assert Door.header(ws.recv(timeout=10))["type"] == messages.WELCOME
        ws.send(framing.encode({"type": "execute", "cell": "normal", "code": "print(6 * 7)", "gpu": "cpu",
                                "inputs": {}, "keep": {}, "binds": []})[0])
        events = []
        while not events or events[-1]["type"] not in (messages.DONE, messages.FAILURE):
            h = Door.header(ws.recv(timeout=60))
            if h.get("cell") == "normal":
                events.append(h)
        assert [e["text"] for e in events if e["type"] == "stream"] == ["42\n"], events
        assert events[-1]["status"] == "ok", events
        ws.close()
    log = (d / "log").read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 : log.index("Traceback") + 4000]
