"""Issue 24, finding 7: ``--max-payload`` counts the bytes that arrive, not the sizes a header declares.

A client declares a few bytes of inputs and sends 200 MiB after them (as 4 MiB frames, or as one
64 MiB frame): it gets an error naming the limit, its connection is closed, and the backend holds
none of it.  Sent to a warm worker, such a cell must not leave that worker hung: the session's
next cell runs."""
from __future__ import annotations

import pytest
from websockets.exceptions import ConnectionClosed

from jupyter_gpu._wire import framing, messages, schema, wsclient

from tests.integration.backend_process import stop_backend
from tests.security.cells import TOKENS, client, run, users_backend

pytestmark = pytest.mark.timeout(180)
LIMIT = 1 << 20


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    proc, url = users_backend(tmp_path_factory.mktemp("payload"), "--max-payload", str(LIMIT))
    yield proc, url
    stop_backend(proc)


def peak_rss(pid: int) -> int:
    """The process's peak resident memory, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        line = next(ln for ln in f if ln.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def raw(url: str, session: str) -> wsclient.Connection:
    ws = wsclient.Connection(url.replace("http", "ws") + f"/ws/session/{session}",
                             {"Authorization": f"token {TOKENS['alice']}"})
    assert framing.parse_first(ws.recv(timeout=10))[0]["type"] == messages.WELCOME
    return ws


def lie(ws: wsclient.Connection, cell: str, declared: list[int], frames: list[int]) -> tuple[dict | None, object]:
    """Send an execute declaring ``declared`` buffer sizes, then frames of ``frames`` bytes; return the
    failure the backend answered (None if none) and how the connection ended."""
    header = {"type": messages.EXECUTE, "cell": cell, "code": "# %%gpu\npass", "gpu": "cpu", "inputs": {},
              "keep": {}, "binds": [], "buffers": declared, "nframes": len(frames)}
    head = schema.encode_header(header)
    try:
        ws.send(framing._PREFIX.pack(framing.MAGIC, framing.PROTOCOL_VERSION, 0, len(head)) + head)
        for n in frames:
            ws.send(b"\0" * n)
    except (ConnectionClosed, OSError):
        pass  # the backend closed the connection while we were still sending: as it should
    failure = None
    try:
        while True:
            header, _ = framing.parse_first(ws.recv(timeout=60))
            if header["type"] == messages.FAILURE:
                failure = header
    except ConnectionClosed as e:
        return failure, e.rcvd
    except TimeoutError:
        return failure, None


@pytest.mark.parametrize("frames", [[4 << 20] * 50, [64 << 20]], ids=["4MiB-frames", "one-64MiB-frame"])
def test_bytes_past_the_declared_sizes_are_refused_and_not_buffered(backend, frames):
    proc, url = backend
    before = peak_rss(proc.pid)
    ws = raw(url, f"liar-{len(frames)}")
    failure, closed = lie(ws, "liar", [10] * len(frames), frames)
    assert closed is not None, "the connection stayed open after 200 MiB past a 10-byte declaration"
    assert closed.code in (1009, 1002), closed
    if failure is not None:
        assert failure["code"] == "payload_too_large" and str(LIMIT) in failure["message"], failure
    else:  # one frame over the websocket's own limit: closed by the server before any was read
        assert closed.code == 1009, closed
    grew = peak_rss(proc.pid) - before
    assert grew < 64 << 20, f"the backend's peak memory grew by {grew >> 20} MiB"
    # the backend still serves
    c = client(url, "bob", f"after-{len(frames)}")
    assert run(c, "ok", "# %%gpu\nprint('still here')")["status"] == "ok"
    c.close()


def test_a_lying_cell_does_not_hang_the_warm_worker(backend):
    _, url = backend
    c = client(url, "alice", "liar-warm")
    assert run(c, "w1", "# %%gpu\nx = 1")["status"] == "ok"  # a warm worker
    c.close()
    ws = raw(url, "liar-warm")  # the same session, again
    failure, closed = lie(ws, "w2", [10], [2 << 20])
    assert closed is not None and failure is not None, (failure, closed)
    assert failure["code"] == "payload_too_large" and str(LIMIT) in failure["message"], failure
    c = client(url, "alice", "liar-warm")  # the session's next cell runs (on a fresh worker)
    done = run(c, "w3", "# %%gpu\nprint('next')")
    assert done["type"] == messages.DONE and done["status"] == "ok", done
    c.close()
