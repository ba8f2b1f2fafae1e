"""A real backend process and real workers, fed bad input: each bad request gets a clear error,
and nothing else is lost - the backend keeps serving and other sessions are untouched."""
import json
import urllib.error
import urllib.request

import pytest
from websockets.exceptions import InvalidStatus
from jupyter_gpu._wire import framing, messages
from jupyter_gpu._client.connection import BackendClient, open_websocket
from jupyter_gpu.errors import AuthError

from .backend_process import runtime_info, start_backend, stop_backend

TOKEN = "test-token-123"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    proc, url = start_backend(tmp_path_factory.mktemp("backend"), "--token", TOKEN,
                              "--max-payload", str(1 << 20), "--keep-warm", "60")
    yield url
    stop_backend(proc)


def run_cell(client, code, cell, **extra):
    client.send({"type": "execute", "cell": cell, "code": code, "gpu": "cpu", "inputs": {}, "keep": {},
                 "binds": extra.pop("binds", []), **extra})
    events = []
    while True:
        msg = client.recv(timeout=60)
        assert msg is not None, f"no event for {cell} within 60 s; got {events}"
        events.append(msg.header)
        if msg.type in (messages.DONE, messages.FAILURE):
            return events


def test_wrong_token_is_refused_on_every_door(backend):
    with pytest.raises(AuthError, match="refused the token"):
        BackendClient(backend, "wrong", "s-bad")
    with pytest.raises(InvalidStatus):
        open_websocket(backend.replace("http", "ws") + "/ws/session/x", {})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{backend}/api/status")
    assert e.value.code == 401
    with pytest.raises(InvalidStatus):
        open_websocket(backend.replace("http", "ws") + "/ws/worker",
                       {"X-Worker-Id": "w-forged", "X-Worker-Secret": "guess"})


def test_malformed_frame_closes_only_that_connection(backend):
    good = BackendClient(backend, TOKEN, "s-good")
    events = run_cell(good, "# %%gpu\nkept = 41", "c1", binds=["kept"])
    assert events[-1]["status"] == "ok"

    ws = open_websocket(backend.replace("http", "ws") + "/ws/session/s-evil", {"Authorization": f"token {TOKEN}"})
    framing.parse_first(ws.recv(timeout=10))  # welcome
    ws.send(b"JG\x01\x00\xff\xff\x00\x00garbage")
    header, _ = framing.parse_first(ws.recv(timeout=10))
    assert header["type"] == messages.FAILURE and header["code"] == "protocol"
    assert "header length" in header["message"]
    with pytest.raises(Exception):
        ws.recv(timeout=10)
    assert ws.close_code == 1002

    # the other session still has its worker and its namespace
    events = run_cell(good, "# %%gpu\nprint(kept + 1)", "c2")
    assert [e["text"] for e in events if e["type"] == "stream"] == ["42\n"]
    assert events[-1]["status"] == "ok" and events[-1]["cold"] is False
    good.close()


def test_oversized_inputs_are_refused_and_the_connection_stays_usable(backend):
    c = BackendClient(backend, TOKEN, "s-big")
    c.send({"type": "execute", "cell": "big", "code": "pass", "gpu": "cpu", "inputs": {}, "keep": {}},
           [b"x" * (2 << 20)])
    msg = c.recv(timeout=30)
    assert msg.type == messages.FAILURE and msg.header["code"] == "payload_too_large"
    assert str(1 << 20) in msg.header["message"]
    c.send({"type": "status"})
    assert c.recv(timeout=10).type == messages.STATUS_REPLY
    c.close()


def test_a_wrongly_typed_field_is_refused_and_the_connection_stays_usable(backend):
    """A well-framed message whose field has the wrong type (a string keep_warm) is refused naming
    the field, its payload skipped; the session's next cell runs on the same connection."""
    c = BackendClient(backend, TOKEN, "s-typed")
    c.send({"type": "execute", "cell": "t1", "code": "pass", "gpu": "cpu", "keep_warm": "300"}, [b"y" * 300_000])
    msg = c.recv(timeout=30)
    assert msg.type == messages.FAILURE and msg.header["code"] == "bad_request" and msg.header["cell"] == "t1"
    assert "keep_warm" in msg.header["message"]
    events = run_cell(c, "# %%gpu\nprint('still here')", "t2")
    assert [e["text"] for e in events if e["type"] == "stream"] == ["still here\n"]
    c.close()


def test_unknown_gpu_type_names_what_is_offered(backend):
    c = BackendClient(backend, TOKEN, "s-gpu")
    events = run_cell(c, "pass", "g1", gpu="Z9000")
    assert events[-1]["type"] == messages.FAILURE and events[-1]["code"] == "no_device"
    assert "Z9000" in events[-1]["message"] and "cpu" in events[-1]["message"]
    c.close()


def test_segfaulting_worker_fails_only_its_cell(backend):
    c = BackendClient(backend, TOKEN, "s-crash")
    first = run_cell(c, "# %%gpu\nimport os\npid = os.getpid()\nprint(pid)", "p1")
    pid = int(next(e["text"] for e in first if e["type"] == "stream"))
    events = run_cell(c, "# %%gpu\nimport ctypes\nctypes.string_at(0)", "crash")
    err = next(e for e in events if e["type"] == messages.ERROR)
    assert err["ename"] == "WorkerLost" and "SIGSEGV" in err["evalue"]
    assert events[-1]["status"] == "lost"
    again = run_cell(c, "# %%gpu\nimport os\nprint(os.getpid())", "p2")
    assert again[-1]["status"] == "ok" and again[-1]["cold"] is True
    assert int(next(e["text"] for e in again if e["type"] == "stream")) != pid
    c.close()


def test_cold_start_forks_a_preimported_worker(backend):
    req = urllib.request.Request(f"{backend}/api/runtime?wait=120", headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(req, timeout=130) as r:
        info = json.load(r)
    assert info["ready"] and info["zygote"]["ready"], info
    c = BackendClient(backend, TOKEN, "s-zygote")
    preloaded = sorted(info["zygote"]["preloaded"])
    assert {"IPython", "numpy", "torch"} <= set(preloaded)  # what `make test` installs
    # a forked worker has the zygote's modules before the cell imports anything
    events = run_cell(c, f"# %%gpu\nimport sys\nprint(sorted(m for m in {preloaded!r} if m in sys.modules))", "z1")
    done = events[-1]
    assert done["status"] == "ok" and done["cold"] and done["start_method"] == "zygote"
    assert [e["text"] for e in events if e["type"] == "stream"] == [f"{preloaded}\n"]
    c.close()


def test_a_worker_forked_from_the_zygote_runs_at_the_backends_priority(backend):
    """The zygote imports at idle priority, on a thread of its own (zygote._preload): the workers
    forked from its main thread do not inherit that, so a cell runs as fast as a local cell would."""
    import os

    runtime_info(backend, TOKEN, 120)  # waits on the zygote
    c = BackendClient(backend, TOKEN, "s-priority")
    events = run_cell(c, "# %%gpu\nimport os\nprint(os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0))", "pr")
    assert events[-1]["status"] == "ok" and events[-1]["start_method"] == "zygote", events[-1]
    assert [e["text"] for e in events if e["type"] == "stream"] == \
        [f"{os.sched_getscheduler(0)} {os.getpriority(os.PRIO_PROCESS, 0)}\n"]
    c.close()
