"""Issue 24, findings 4 and 5 (ids): a cell's id is chosen by its kernel, so the backend keys cells by
(session, cell) - one user's id can neither reach another user's cell (stop it in the line, move its
ledger row) nor make several cells one (billed once: ``--user-budget`` evaded).

Each test is the attack, against a real backend process with two users' tokens."""
from __future__ import annotations

import pytest

from jupyter_gpu._wire import messages

from tests.integration.backend_process import stop_backend
from tests.security.cells import client, execute, ledger_rows, run, until, users_backend

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    proc, url = users_backend(tmp_path_factory.mktemp("ids"))
    yield url
    stop_backend(proc)


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    """One worker at a time: a second cell waits in the line."""
    proc, url = users_backend(tmp_path_factory.mktemp("line"), "--max-workers", "1", "--keep-warm", "1")
    yield url
    stop_backend(proc)


def test_reusing_another_users_cell_id_leaves_their_ledger_row_alone(backend):
    alice, bob = client(backend, "alice", "ids-alice"), client(backend, "bob", "ids-bob")
    mine = run(alice, "shared-id", "# %%gpu\nx = 1")
    assert mine["status"] == "ok"
    theirs = run(bob, "shared-id", "# %%gpu\ny = 2")
    assert theirs["status"] == "ok"

    # alice's row is hers, as her cell left it; bob's cell has a row of its own
    rows = ledger_rows(backend, "alice", "shared-id")
    assert [(r["session"], r["worker"], r["status"]) for r in rows] == [("ids-alice", mine["worker"], "ok")], rows
    rows = ledger_rows(backend, "bob", "shared-id")
    assert [(r["session"], r["worker"], r["status"]) for r in rows] == [("ids-bob", theirs["worker"], "ok")], rows
    alice.close()
    bob.close()


def test_concurrent_cells_with_one_id_are_each_billed_or_refused(backend):
    """Three of bob's sessions run cell "dup" at once: three rows, each with its run time.  A second
    "dup" in a session where "dup" still runs is refused, and runs nothing."""
    sessions = [client(backend, "bob", f"dup-{i}") for i in range(3)]
    for c in sessions:  # each gets its worker first: the three cells then run at the same time
        assert run(c, "warm", "# %%gpu\npass")["status"] == "ok"
    for c in sessions:
        execute(c, "dup", "# %%gpu\nimport time\ntime.sleep(1.5)\nprint('ran')")
    # while the first "dup" runs, its session sends another cell with that id
    execute(sessions[0], "dup", "# %%gpu\nprint('second dup ran')")
    refused = until(sessions[0], messages.FAILURE)
    assert refused["code"] == "bad_request" and "dup" in refused["message"], refused
    outputs = []
    for c in sessions:
        while True:
            msg = c.recv(timeout=60)
            assert msg is not None and msg.type != messages.FAILURE, msg and msg.header
            if msg.type == messages.STREAM:
                outputs.append(msg.header["text"])
            if msg.type == messages.DONE and msg.header["cell"] == "dup":
                assert msg.header["status"] == "ok"
                break
    assert outputs == ["ran\n"] * 3  # the refused cell printed nothing
    rows = ledger_rows(backend, "bob", "dup")
    assert sorted(r["session"] for r in rows) == ["dup-0", "dup-1", "dup-2"], rows
    assert all(r["status"] == "ok" and r["run_s"] >= 1.5 for r in rows), rows
    for c in sessions:
        c.close()


def test_another_user_cannot_stop_a_queued_cell(one_worker):
    """Bob holds the only worker (his cell waits on input()); alice's cell waits in the line.  Bob
    sends interrupts for her cell's id: it stays in the line and runs once his cell ends."""
    bob, alice = client(one_worker, "bob", "line-bob"), client(one_worker, "alice", "line-alice")
    execute(bob, "b-hold", "# %%gpu\nanswer = input('go? ')")
    assert until(bob, messages.INPUT_REQUEST)["type"] == messages.INPUT_REQUEST
    execute(alice, "a-queued", "# %%gpu\nprint('alice ran')")
    phase = until(alice, messages.PHASE, cell="a-queued")
    assert phase.get("phase") == "queued" and phase.get("position") == 1, phase

    for _ in range(3):
        bob.send({"type": messages.INTERRUPT, "cell": "a-queued"})
    bob.send({"type": messages.STATUS})  # answered after the interrupts were handled
    assert until(bob, messages.STATUS_REPLY)["type"] == messages.STATUS_REPLY

    bob.send({"type": messages.INPUT_REPLY, "cell": "b-hold", "value": "yes"})
    assert until(bob, messages.DONE, cell="b-hold")["status"] == "ok"
    texts = []
    while True:
        msg = alice.recv(timeout=60)
        assert msg is not None and msg.type != messages.FAILURE, msg and msg.header
        if msg.type in (messages.STREAM, messages.ERROR):
            texts.append(msg.header.get("text") or msg.header.get("evalue"))
        if msg.type == messages.DONE:
            break
    assert msg.header["status"] == "ok" and texts == ["alice ran\n"], (msg.header, texts)
    bob.close()
    alice.close()
