"""Issue 24, finding 10 (tokens): under ``--users`` only the users' tokens open the backend.

Before, the backend still made its own random ``local`` token, printed it on start and accepted it
(as the backend's owner, who may build from a Dockerfile of the host): whoever read the log or the
runtime file was in, as nobody's user.
"""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from jupyter_gpu._client.connection import BackendClient
from jupyter_gpu.errors import AuthError
from tests.integration.backend_process import start_backend, stop_backend

pytestmark = pytest.mark.timeout(120)
TOKENS = {"alice": "token-of-alice", "bob": "token-of-bob"}


def users_file(d):
    path = d / "users.json"
    path.write_text(json.dumps(TOKENS))
    path.chmod(0o600)
    return path


def status(url: str, token: str) -> int:
    req = urllib.request.Request(f"{url}/api/status", headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_the_backends_own_token_is_refused_under_users(tmp_path):
    proc, url = start_backend(tmp_path, "--users", str(users_file(tmp_path)))
    try:
        own = json.loads((tmp_path / "backend.json").read_text()).get("token")
        if own:  # written or not, it opens nothing
            assert status(url, own) == 401
            with pytest.raises(AuthError):
                BackendClient(url, own, "s-owner")
        assert status(url, TOKENS["alice"]) == 200
        BackendClient(url, TOKENS["bob"], "s-bob").close()
    finally:
        stop_backend(proc)


def test_no_token_is_printed_under_users(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "jupyter_gpu_backend", "--users", str(users_file(tmp_path)),
                             "--ledger", str(tmp_path / "ledger.sqlite3")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        while line and "jupyter-gpu backend at" not in line:
            line = proc.stdout.readline()
        assert "jupyter-gpu backend at" in line, line
        assert "token" not in line.split(" at ", 1)[1].lower() or "users" in line, line
        url = line.split(" at ", 1)[1].split()[0]
        assert status(url, TOKENS["alice"]) == 200
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_users_file_cannot_name_the_owner(tmp_path):
    """``local`` is the backend owner's name (the one who may build from the host's Dockerfiles):
    a users file that names it is refused rather than handing that user the owner's rights."""
    path = tmp_path / "users.json"
    path.write_text(json.dumps({"local": "token-of-mallory"}))
    path.chmod(0o600)
    run = subprocess.run([sys.executable, "-m", "jupyter_gpu_backend", "--users", str(path),
                          "--ledger", str(tmp_path / "ledger.sqlite3")], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "local" in run.stderr, run.stderr
