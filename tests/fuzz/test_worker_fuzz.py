"""The worker's door fuzzed from inside a worker (issue 25): a cell's code holds its worker's
connection to the backend (a user's code does, in every worker), and sends on it what hypothesis
generates - every message type a worker sends, with hostile fields (the cell's own id, another's, a
wrong type, nested deep, huge), other sides' and unknown types, broken frames.  The backend must end
that cell within its bound (a close of the worker's connection fails it as lost, saying why),
never crash (a traceback in its log), leave no ledger row `running`, and serve the next cell.

Bounded: BATCHES cells of 1-30 messages; derandomized.
"""
from __future__ import annotations

import base64
import pickle
import time

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from jupyter_gpu._wire import framing, messages
from jupyter_gpu.errors import ERRORS_BY_CODE

from tests.integration.backend_process import api_get, start_backend, stop_backend

from .strategies import broken_frame, first_frame, header_text

TOKEN = "worker-fuzz-token"
BATCHES = 20  # cells, each sending 1-30 messages (a wrongly typed one closes the worker's connection)
pytestmark = pytest.mark.timeout(300)
WORKER_KINDS = sorted({"done", "stream", "display", "clear_output", "error", "iopub", "item", "payload",
                       "input_request", "started", "metered", "retired", "reported", "register"}
                      | ({"heartbeat"} if "heartbeat" in messages.TYPES else set()))
# the cell's code: find its worker's agent, send the frames as the worker (under its send lock)
SEND = """import base64, builtins, gc, pickle
agent = getattr(builtins, "_fuzz_agent", None) or next(o for o in gc.get_objects() if type(o).__name__ == "Agent")
builtins._fuzz_agent = agent
with agent._send_lock:
    for f in pickle.loads(base64.b64decode({b64!r})):
        agent.ws.send(f)
print("sent")
"""


@st.composite
def worker_message(draw, cell: str) -> bytes:
    if draw(st.integers(0, 99)) >= 97:  # (hypothesis draws small numbers most)
        return draw(broken_frame())
    cells = st.sampled_from([cell, cell, "f-other"])  # mostly the running cell's: its events are relayed
    return first_frame(draw(header_text(kinds=WORKER_KINDS + ["execute", "welcome", "no-such"],
                                        overrides={"cell": cells})))


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    d = tmp_path_factory.mktemp("worker-fuzz")
    proc, url = start_backend(d, "--token", TOKEN, "--keep-warm", "3")
    yield proc, url, d
    stop_backend(proc)


def _session(url: str, name: str):
    ws = connect(url.replace("http", "ws", 1) + f"/ws/session/{name}",
                 additional_headers={"Authorization": f"token {TOKEN}"}, max_size=None, open_timeout=10, legacy=True)
    assert framing.parse_first(ws.recv(timeout=10))[0]["type"] == messages.WELCOME
    return ws


def _run(ws, cell: str, code: str, timeout: float = 60) -> list[dict]:
    ws.send(framing.encode({"type": "execute", "cell": cell, "code": code, "gpu": "cpu", "inputs": {}, "keep": {},
                            "binds": []})[0])
    events, deadline = [], time.monotonic() + timeout
    while True:
        h = framing.parse_first(ws.recv(timeout=max(0.1, deadline - time.monotonic())))[0]
        if h["type"] == messages.FAILURE:
            assert h.get("code") in ERRORS_BY_CODE and h.get("message"), h
        if h.get("cell") == cell:
            events.append(h)
            if h["type"] in (messages.DONE, messages.FAILURE):
                return events


def test_hostile_messages_from_a_worker_fail_only_its_cell(backend):
    proc, url, d = backend
    ws = _session(url, "s-wfuzz")
    statuses = []

    @settings(derandomize=True, database=None, deadline=None, max_examples=BATCHES, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def fuzz(data):
        cell = f"w{len(statuses)}"
        frames = data.draw(st.lists(worker_message(cell), min_size=1, max_size=30))
        events = _run(ws, cell, SEND.replace("{b64!r}", repr(base64.b64encode(pickle.dumps(frames)).decode())))
        statuses.append(events[-1].get("status", events[-1].get("code")))
        assert proc.poll() is None, "the backend exited"

    fuzz()
    assert len(statuses) == BATCHES, statuses
    print("worker fuzz: the cells ended", statuses)
    # the session's next cell runs, on a worker that is its own again
    events = _run(ws, "normal", "print(6 * 7)")
    assert events[-1]["type"] == messages.DONE and events[-1]["status"] == "ok", events
    assert [e["text"] for e in events if e["type"] == "stream"] == ["42\n"], events
    ws.send(framing.encode({"type": messages.RELEASE})[0])
    ws.close()
    deadline = time.monotonic() + 30
    while (stuck := [c for c in api_get(url, TOKEN, "/api/cells?limit=10000")["cells"]
                     if c["status"] in ("running", "queued", "started")]):
        assert time.monotonic() < deadline, f"ledger rows left {stuck[0]['status']}: {stuck[:3]}"
        time.sleep(0.2)  # polling another process's ledger: there is no event to wait on
    log = (d / "log").read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 : log.index("Traceback") + 4000]


def _send_code(frames: list[bytes], then: str = "") -> str:
    return SEND.replace("{b64!r}", repr(base64.b64encode(pickle.dumps(frames)).decode())) + then


def test_lane_cells_a_worker_announced_and_never_metered_are_lost_with_it(backend):
    """A worker's user's code sends `started` for lane cells it never meters, then its worker dies:
    every one of those rows ends `lost` (only the last announced did before: the others stayed
    `running` for good), and an announcement naming no cell is ignored."""
    proc, url, d = backend
    ws = _session(url, "s-lane-forged")
    started = [framing.encode({"type": messages.STARTED, "cell": c})[0] for c in ("lane-a", "lane-b", "")]
    events = _run(ws, "forger", _send_code(started, "import os\nos._exit(3)\n"))
    assert events[-1]["type"] == messages.DONE and events[-1]["status"] == "lost", events
    rows = {c["id"]: c["status"] for c in api_get(url, TOKEN, "/api/cells?session=s-lane-forged")["cells"]}
    assert rows.get("lane-a") == rows.get("lane-b") == "lost" and "" not in rows, rows
    ws.close()


def test_a_worker_message_numbered_ahead_fails_its_cell_instead_of_muting_the_worker(backend):
    """Every message of a worker carries its number (`wseq`, for a resumed connection to skip what
    was taken): one numbered far ahead, sent by a user's code, had the backend skip every later
    message of the worker as taken - the cell never ended, its ledger row `running` for good."""
    proc, url, d = backend
    ws = _session(url, "s-wseq")
    ahead = [framing.encode({"type": messages.STREAM, "cell": "ahead", "name": "stdout", "text": "x", "wseq": 10**6})[0]]
    events = _run(ws, "ahead", _send_code(ahead), timeout=30)
    assert events[-1]["type"] == messages.DONE and events[-1]["status"] == "lost", events
    assert any("numbers its messages one by one" in e.get("evalue", "") for e in events), events
    assert _run(ws, "after", "print('on')")[-1]["status"] == "ok"
    ws.close()
