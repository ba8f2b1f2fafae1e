"""What the tests of issue 24's findings 4-7 share: a real backend with several users' tokens, and a
kernel's side of it spoken raw (``BackendClient``: the frames a hostile client can send, not only
those the ``%%gpu`` magic would)."""
from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from jupyter_gpu._client.connection import BackendClient
from jupyter_gpu._wire import messages

from tests.integration.backend_process import start_backend

TOKENS = {"alice": "token-of-alice", "bob": "token-of-bob", "carol": "token-of-carol"}


def users_backend(d: Path, *args: str):
    """A backend serving alice, bob and carol (``--users``): (process, url)."""
    users = d / "users.json"
    users.write_text(json.dumps(TOKENS))
    users.chmod(0o600)
    return start_backend(d, "--users", str(users), *args)


def client(url: str, user: str, session: str) -> BackendClient:
    return BackendClient(url, TOKENS[user], session)


def execute(c: BackendClient, cell: str, code: str, **extra) -> None:
    c.send({"type": messages.EXECUTE, "cell": cell, "code": code, "gpu": "cpu", "inputs": {}, "keep": {},
            "binds": [], **extra})


def until(c: BackendClient, *kinds: str, cell: str | None = None, timeout: float = 60) -> dict:
    """The next message of one of ``kinds`` (of ``cell``, if given); a failure is returned too."""
    while True:
        msg = c.recv(timeout=timeout)
        assert msg is not None, f"no {kinds} within {timeout} s"
        if msg.type == messages.FAILURE or (msg.type in kinds and (cell is None or msg.header.get("cell") == cell)):
            return msg.header


def run(c: BackendClient, cell: str, code: str, **extra) -> dict:
    """Run a cell to its end: its ``done`` (or the failure that refused it)."""
    execute(c, cell, code, **extra)
    return until(c, messages.DONE, cell=cell)


def api(url: str, user: str, path: str) -> dict:
    req = urllib.request.Request(f"{url}{path}", headers={"Authorization": f"token {TOKENS[user]}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def ledger_rows(url: str, user: str, cell: str) -> list[dict]:
    """``user``'s ledger rows (``GET /api/cells``) of the cell id ``cell``."""
    return [c for c in api(url, user, "/api/cells")["cells"] if c["id"] == cell]
