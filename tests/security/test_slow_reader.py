"""Issue 24, finding 6: a client that stops reading slows only itself.

Alice's second session waits in the line for the only worker, then stops reading (its connection's
buffers full: a 12 MiB answer it never reads).  Bob's cell, queued behind it, must still run once
the worker comes free; alice's stalled connection is dropped after the backend's ``--send-timeout``
and, when she reads again, closed with a reason saying so."""
from __future__ import annotations

import pytest
from websockets.exceptions import ConnectionClosed

from jupyter_gpu._wire import framing, messages, wsclient

from tests.integration.backend_process import stop_backend
from tests.security.cells import TOKENS, client, execute, until, users_backend

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    proc, url = users_backend(tmp_path_factory.mktemp("slow"), "--max-workers", "1", "--keep-warm", "1",
                              "--send-timeout", "2")
    yield url
    stop_backend(proc)


def test_a_client_that_stops_reading_does_not_block_the_line(backend):
    holder = client(backend, "alice", "slow-holder")
    execute(holder, "hold", "# %%gpu\nanswer = input('go? ')")  # the only worker, held until answered
    assert until(holder, messages.INPUT_REQUEST)["type"] == messages.INPUT_REQUEST

    # alice's second session: raw, read only when asked (no reader thread), so that it can stop reading
    ws = wsclient.Connection(backend.replace("http", "ws") + "/ws/session/slow-reader",
                             {"Authorization": f"token {TOKENS['alice']}"})
    assert framing.parse_first(ws.recv(timeout=10))[0]["type"] == messages.WELCOME
    for f in framing.encode({"type": messages.EXECUTE, "cell": "stalled", "code": "# %%gpu\npass", "gpu": "cpu",
                             "inputs": {}, "keep": {}, "binds": []}):
        ws.send(f)
    while True:  # in the line, first
        header, _ = framing.parse_first(ws.recv(timeout=30))
        if header["type"] == messages.PHASE:
            assert header["phase"] == "queued" and header["position"] == 1, header
            break
    # an unknown type is answered naming it: 12 MiB the backend must send, which alice does not read
    for f in framing.encode({"type": "x" * (12 << 20)}):
        ws.send(f)

    bob = client(backend, "bob", "slow-bob")
    execute(bob, "behind", "# %%gpu\nprint('bob ran')")
    holder.send({"type": messages.INPUT_REPLY, "cell": "hold", "value": "y"})
    assert until(holder, messages.DONE, cell="hold")["status"] == "ok"
    done = until(bob, messages.DONE, cell="behind", timeout=90)  # alice's cell ran (keep-warm 1 s), then his
    assert done["type"] == messages.DONE and done["status"] == "ok", done

    # alice reads again: what was sent before the bound, then the close that says why
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=30)
    why = closed.value.rcvd
    assert why is not None and why.code == 1008 and "did not read" in why.reason, why
    holder.close()
    bob.close()
