"""Several users on one backend: each token is one user; nothing of one user's sessions reaches another."""
import json
import urllib.request

import pytest

from jupyter_gpu._client.connection import BackendClient
from jupyter_gpu.errors import ConnectionLost

from .backend_process import start_backend, stop_backend
from .test_backend_robustness import run_cell

pytestmark = pytest.mark.timeout(120)
TOKENS = {"alice": "token-of-alice", "bob": "token-of-bob"}


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    d = tmp_path_factory.mktemp("users")
    users = d / "users.json"
    users.write_text(json.dumps(TOKENS))
    users.chmod(0o600)
    proc, url = start_backend(d, "--users", str(users))
    yield url
    stop_backend(proc)


def status_of(url, token):
    req = urllib.request.Request(f"{url}/api/status", headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def uid_of(events):
    return int(next(e["text"] for e in events if e["type"] == "stream").split()[-1])


def test_one_users_session_and_workers_are_out_of_another_users_reach(backend):
    alice = BackendClient(backend, TOKENS["alice"], "s-alice")
    a = run_cell(alice, "# %%gpu\nimport os\nsecret = 'alice only'\nprint(os.getuid())", "a1")
    assert a[-1]["status"] == "ok"

    # bob cannot attach to alice's session, even knowing its id
    with pytest.raises(ConnectionLost, match="belongs to another user"):
        BackendClient(backend, TOKENS["bob"], "s-alice")

    # bob's own session runs on another worker, with a fresh namespace
    bob = BackendClient(backend, TOKENS["bob"], "s-bob")
    b = run_cell(bob, "# %%gpu\nimport os\nprint('secret' in dir(), os.getuid())", "b1")
    assert b[-1]["status"] == "ok" and b[-1]["worker"] != a[-1]["worker"]
    text = next(e["text"] for e in b if e["type"] == "stream")
    # (each user's workers run as that user's own uid: tests/security/test_sandbox.py)
    assert text.startswith("False ") and uid_of(b) != uid_of(a)

    # each sees only their own sessions
    assert set(status_of(backend, TOKENS["bob"])["sessions"]) == {"s-bob"}
    assert set(status_of(backend, TOKENS["alice"])["sessions"]) == {"s-alice"}
    alice.close()
    bob.close()


def _recv_until(client, kind: str, timeout: float = 60) -> dict:
    """The next message of type ``kind`` (a failure is returned too: it is the answer)."""
    while True:
        msg = client.recv(timeout=timeout)
        assert msg is not None, f"no {kind} within {timeout} s"
        if msg.type in (kind, "failure"):
            return msg.header


def test_a_users_spawned_call_is_out_of_another_users_reach(backend):
    from jupyter_gpu._wire import serialization

    alice = BackendClient(backend, TOKENS["alice"], "s-alice-jobs")
    packer = serialization.Packer()
    call = {"name": "pow", "fn": packer.pack(serialization.pickle_value("<fn>", pow)),
            "args": packer.pack(serialization.pickle_value("<args>", ((2, 10), {}))), "job": True}
    # the kernel picks a cell id; the call's id is the backend's, never the kernel's choice
    alice.send({"type": "execute", "cell": "fc-chosen-by-alice", "code": "", "gpu": "cpu", "inputs": {}, "keep": {},
                "binds": [], "no_out": True, "exec_count": 1, "shm": False, "call": call,
                "job": {"notebook": "/shared/nb.ipynb"}}, packer.buffers)
    reply = _recv_until(alice, "job_reply")
    jid = reply["job"]
    assert reply["type"] == "job_reply" and jid.startswith("fc-") and jid != "fc-chosen-by-alice"

    # bob knows the id and the notebook's path: nothing of the call is his to read, cancel or list
    bob = BackendClient(backend, TOKENS["bob"], "s-bob-jobs")
    for ask in ({"type": "job_info", "job": jid}, {"type": "job_cancel", "job": jid},
                {"type": "job_get", "cell": "b-get", "job": jid}):
        bob.send(ask)
        answer = _recv_until(bob, "job_reply")
        assert answer["type"] == "failure" and answer["code"] == "no_such_job", answer
    bob.send({"type": "jobs", "notebook": "/shared/nb.ipynb"})
    assert _recv_until(bob, "jobs_reply")["jobs"] == []

    # alice's call ran untouched: its value, replayed to her
    alice.send({"type": "job_get", "cell": "a-get", "job": jid, "timeout": 60})
    while True:
        msg = alice.recv(timeout=60)
        assert msg is not None and msg.type != "failure", msg and msg.header
        if msg.type == "done":
            break
    assert msg.header["status"] == "ok" and msg.header["cell"] == "a-get"
    assert serialization.unpack("<result>", msg.header["result"], msg.buffers, None) == 1024
    alice.send({"type": "jobs", "notebook": "/shared/nb.ipynb"})
    assert [j["job"] for j in _recv_until(alice, "jobs_reply")["jobs"]] == [jid]
    alice.close()
    bob.close()


def test_another_user_cannot_build_from_a_dockerfile_on_the_backends_host(backend):
    from jupyter_gpu._wire import imagespec

    spec = imagespec.seal({"kind": "dockerfile", "text": "FROM scratch\n", "path": "/etc/Dockerfile"}, [])
    bob = BackendClient(backend, TOKENS["bob"], "s-bob-dockerfile")
    bob.send({"type": "execute", "cell": "b-df", "code": "print(1)", "gpu": "cpu", "image": spec["name"],
              "image_spec": spec, "inputs": {}, "keep": {}, "binds": [], "no_out": True, "exec_count": 1})
    answer = _recv_until(bob, "done")
    assert answer["type"] == "failure" and answer["code"] == "image_build" and "owner" in answer["message"], answer
    bob.close()
