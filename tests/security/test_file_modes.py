"""Issue 24: every file the backend keeps is its user's alone (files 0600, directories 0700).

A real backend runs a cell, a spawned call (its result under jobs/) and a cell on a
``jupyter_gpu.Image`` (an environment layer in its cache), then every file and directory it made
is looked at: the ledger (and SQLite's -wal/-shm beside it), the runtime file, jobs/ and its
frames, the environment cache, the workers' logs.  Before, the ledger and the environment cache
were readable by every user of the host (0644 / 0755): a team member's shell read every cell's
record.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from jupyter_gpu._client.connection import BackendClient
from jupyter_gpu._wire import imagespec, serialization
from tests.integration.backend_process import start_backend, stop_backend
from tests.integration.test_backend_robustness import run_cell
from tests.integration.test_users import _recv_until

pytestmark = pytest.mark.timeout(180)
TOKEN = "modes-token"


def loose(path: Path) -> list[str]:
    """``path`` and what is under it that others than the owner may read, write or enter."""
    found = []
    for p in [path, *(path.rglob("*") if path.is_dir() else [])]:
        mode = p.lstat().st_mode
        if stat.S_ISLNK(mode) or stat.S_ISSOCK(mode):
            continue
        if mode & 0o077:
            found.append(f"{oct(mode & 0o777)} {p}")
    return found


def worker_log_of(pid: int) -> Path:
    """The log file the worker's output goes to (its runtime opened it)."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        if target.startswith("/") and "jupyter-gpu-workers-" in target and os.path.isfile(target):
            return Path(target)
    raise AssertionError(f"worker {pid} has no log file open")


def spawn_and_wait(client: BackendClient) -> None:
    packer = serialization.Packer()
    call = {"name": "pow", "fn": packer.pack(serialization.pickle_value("<fn>", pow)),
            "args": packer.pack(serialization.pickle_value("<args>", ((2, 10), {}))), "job": True}
    client.send({"type": "execute", "cell": "fc-1", "code": "", "gpu": "cpu", "inputs": {}, "keep": {},
                 "binds": [], "no_out": True, "exec_count": 1, "shm": False, "call": call,
                 "job": {"notebook": "/nb.ipynb"}}, packer.buffers)
    jid = _recv_until(client, "job_reply")["job"]
    client.send({"type": "job_get", "cell": "get-1", "job": jid, "timeout": 60})
    while True:
        msg = client.recv(timeout=60)
        assert msg is not None and msg.type != "failure", msg and msg.header
        if msg.type == "done":
            return


def test_the_backends_files_are_its_users_alone(tmp_path):
    cache = tmp_path / "cache"
    proc, url = start_backend(tmp_path, "--token", TOKEN, "--no-lane", env={"XDG_CACHE_HOME": str(cache)})
    try:
        client = BackendClient(url, TOKEN, "s-modes")
        events = run_cell(client, "# %%gpu\nimport os\nprint(os.getpid())", "m1")
        assert events[-1]["status"] == "ok", events
        worker_pid = int(next(e["text"] for e in events if e["type"] == "stream"))
        worker_log = worker_log_of(worker_pid)
        spawn_and_wait(client)
        spec = imagespec.seal({"kind": "kernel"}, [{"op": "env", "vars": {"MODES_TEST": "1"}}])
        events = run_cell(client, "# %%gpu\nimport os\nprint(os.environ['MODES_TEST'])", "m2",
                          image=spec["name"], image_spec=spec)
        assert events[-1]["status"] == "ok", events
        client.close()
        kept = {
            "ledger": sorted(tmp_path.glob("ledger.sqlite3*")),
            "runtime file": [tmp_path / "backend.json"],
            "jobs": [tmp_path / "jobs"],
            "environment cache": [cache / "jupyter-gpu"],
            "worker logs": [worker_log.parent],
        }
        for what, paths in kept.items():
            assert paths and all(p.exists() for p in paths), (what, paths)
        assert list((tmp_path / "jobs").iterdir()), "the spawned call's result was not kept"
        problems = {what: sum((loose(p) for p in paths), []) for what, paths in kept.items()}
        assert not any(problems.values()), json.dumps(problems, indent=1)
    finally:
        stop_backend(proc)
