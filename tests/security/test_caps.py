"""Issue 24, finding 5 (limits): one user cannot take the whole backend - workers, sessions and cells
waiting for a worker are capped per user (``--max-workers-per-user`` and friends, or ``--config``),
refused with an error naming the cap; and a client's numbers are checked: a ``keep_warm`` of 1e308 s
(a worker held for ever) is refused, leaves no ``running`` row, and ``/api/status`` still answers."""
from __future__ import annotations

import pytest

from jupyter_gpu._wire import messages
from jupyter_gpu.errors import ConnectionLost

from tests.integration.backend_process import stop_backend
from tests.security.cells import api, client, execute, ledger_rows, run, until, users_backend

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    proc, url = users_backend(tmp_path_factory.mktemp("caps"), "--max-workers-per-user", "1",
                              "--max-sessions-per-user", "2", "--keep-warm", "60")
    yield url
    stop_backend(proc)


@pytest.fixture(scope="module")
def line(tmp_path_factory):
    """One worker at a time (cells wait in the line); the per-user cap of waiting cells from --config."""
    d = tmp_path_factory.mktemp("queued")
    (d / "caps.toml").write_text("max_workers = 1\nmax_queued_per_user = 1\n")
    proc, url = users_backend(d, "--config", str(d / "caps.toml"))
    yield url
    stop_backend(proc)


def test_sessions_per_user_are_capped(capped):
    kept = [client(capped, "bob", f"bob-s{i}") for i in range(2)]
    with pytest.raises(ConnectionLost, match="max-sessions-per-user"):
        client(capped, "bob", "bob-s2")
    again = client(capped, "bob", "bob-s1")  # a session he has: reconnecting is not a new one
    carol = client(capped, "carol", "carol-s0")  # another user is not counted against him
    for c in (*kept, again, carol):
        c.close()


def test_workers_per_user_are_capped(capped):
    first, second = client(capped, "alice", "alice-w1"), client(capped, "alice", "alice-w2")
    assert run(first, "w1", "# %%gpu\npass")["status"] == "ok"  # her one worker, warm for 60 s
    refused = run(second, "w2", "# %%gpu\nprint('ran')")
    assert refused["type"] == messages.FAILURE and refused["code"] == "user_limit", refused
    assert "max-workers-per-user" in refused["message"] and "1" in refused["message"], refused
    assert [r["status"] for r in ledger_rows(capped, "alice", "w2")] in ([], ["failed"])
    first.send({"type": messages.RELEASE})  # given back: now her other session may have one
    assert until(first, messages.STATUS_REPLY)["released"] == 1
    assert run(second, "w3", "# %%gpu\npass")["status"] == "ok"
    first.close()
    second.close()


def test_cells_waiting_for_a_worker_are_capped_per_user(line):
    alice = client(line, "alice", "q-alice")
    execute(alice, "hold", "# %%gpu\nanswer = input('go? ')")  # the only worker, held
    assert until(alice, messages.INPUT_REQUEST)["type"] == messages.INPUT_REQUEST
    bob1, bob2 = client(line, "bob", "q-bob1"), client(line, "bob", "q-bob2")
    execute(bob1, "b1", "# %%gpu\nprint('b1')")
    assert until(bob1, messages.PHASE, cell="b1").get("phase") == "queued"
    refused = run(bob2, "b2", "# %%gpu\nprint('b2')")
    assert refused["type"] == messages.FAILURE and refused["code"] == "user_limit", refused
    assert "max-queued-per-user" in refused["message"], refused
    alice.send({"type": messages.INPUT_REPLY, "cell": "hold", "value": "y"})
    assert until(alice, messages.DONE, cell="hold")["status"] == "ok"
    alice.send({"type": messages.RELEASE})  # the worker goes: bob's cell has it next
    assert until(bob1, messages.DONE, cell="b1")["status"] == "ok"
    for c in (alice, bob1, bob2):
        c.close()


@pytest.mark.parametrize("kind", ["execute", "prewarm"])
def test_a_keep_warm_out_of_range_is_refused(capped, kind):
    c = client(capped, "carol", "kw")  # (one session for both cases: she may have two)
    if kind == "execute":
        execute(c, "forever", "# %%gpu\npass", keep_warm=1e308)
    else:
        c.send({"type": messages.PREWARM, "gpu": "cpu", "keep_warm": 1e308})
    refused = until(c, messages.DONE, messages.STATUS_REPLY)
    assert refused["type"] == messages.FAILURE and refused["code"] == "bad_request", refused
    assert "keep_warm" in refused["message"], refused
    assert ledger_rows(capped, "carol", "forever") == []  # nothing was started: no row left `running`
    status = api(capped, "carol", "/api/status")  # answers, and no lease holds a worker for ever
    assert all(lease["keep_warm"] <= 86400 for s in status["sessions"].values() for lease in s["leases"])
    # the connection is kept: a cell in range runs
    assert run(c, "ok", "# %%gpu\npass", keep_warm=5)["status"] == "ok"
    c.send({"type": messages.RELEASE})  # (carol may have one worker: the next case needs it)
    assert until(c, messages.STATUS_REPLY)["released"] == 1
    c.close()


@pytest.fixture(scope="module")
def two_slots(tmp_path_factory):
    proc, url = users_backend(tmp_path_factory.mktemp("slots"), "--max-workers", "2", "--keep-warm", "300")
    yield url
    stop_backend(proc)


def test_cells_sent_at_once_start_one_worker_and_leave_no_slot_taken(two_slots):
    """A session that sends two cells before its first worker is up (a hostile kernel; a prewarm and
    a cell) gets one worker: the second cell is not given a worker of its own whose lease would
    orphan the first's (never stopped, its --max-workers slot taken for good: after a fuzzed session,
    the next user's cells waited in line for ever).  Once she gives her worker back, both slots are
    free: bob's two sessions each get one at once."""
    alice = client(two_slots, "alice", "at-once")
    execute(alice, "a", "# %%gpu\nprint('a')")
    execute(alice, "b", "# %%gpu\nprint('b')")
    ends = {}
    while len(ends) < 2:
        h = until(alice, messages.DONE)
        ends[h["cell"]] = h
    for h in ends.values():  # each ran, or was refused naming why (one cell at a time on a worker)
        assert h.get("status") == "ok" or "one cell at a time" in h.get("message", ""), h
    alice.send({"type": messages.RELEASE})
    assert until(alice, messages.STATUS_REPLY)["released"] == 1
    bobs = [client(two_slots, "bob", f"bob-{i}") for i in range(2)]
    for i, bob in enumerate(bobs):
        execute(bob, f"c{i}", "# %%gpu\npass")
    for i, bob in enumerate(bobs):  # (the slot of a worker alice lost track of would come back after 300 s)
        assert until(bob, messages.DONE, cell=f"c{i}", timeout=60)["status"] == "ok"
    for c in (alice, *bobs):
        c.close()
