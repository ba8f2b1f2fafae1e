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


def pid_of(events):
    return int(next(e["text"] for e in events if e["type"] == "stream").split()[-1])


def test_one_users_session_and_workers_are_out_of_another_users_reach(backend):
    alice = BackendClient(backend, TOKENS["alice"], "s-alice")
    a = run_cell(alice, "# %%gpu\nimport os\nsecret = 'alice only'\nprint(os.getpid())", "a1")
    assert a[-1]["status"] == "ok"

    # bob cannot attach to alice's session, even knowing its id
    with pytest.raises(ConnectionLost, match="belongs to another user"):
        BackendClient(backend, TOKENS["bob"], "s-alice")

    # bob's own session runs on another worker, with a fresh namespace
    bob = BackendClient(backend, TOKENS["bob"], "s-bob")
    b = run_cell(bob, "# %%gpu\nimport os\nprint('secret' in dir(), os.getpid())", "b1")
    assert b[-1]["status"] == "ok" and b[-1]["worker"] != a[-1]["worker"]
    text = next(e["text"] for e in b if e["type"] == "stream")
    assert text.startswith("False ") and pid_of(b) != pid_of(a)

    # each sees only their own sessions
    assert set(status_of(backend, TOKENS["bob"])["sessions"]) == {"s-bob"}
    assert set(status_of(backend, TOKENS["alice"])["sessions"]) == {"s-alice"}
    alice.close()
    bob.close()
