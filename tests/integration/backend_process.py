"""A real `jupyter_gpu_backend` process for the integration tests, with its own ledger and log."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def start_backend(d: Path, *args: str, timeout: float = 120, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """Start a backend writing its runtime file, ledger and log into ``d``; return (process, url).

    ``env``: variables added to this process's environment for the backend (e.g. the docker base)."""
    info_path = d / "backend.json"
    if info_path.exists():
        info_path.unlink()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_gpu_backend", "--runtime-file", str(info_path),
         "--ledger", str(d / "ledger.sqlite3"), *args],
        stdout=open(d / "log", "ab"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + timeout
    while not info_path.exists():
        assert proc.poll() is None, (d / "log").read_text()
        assert time.monotonic() < deadline, f"backend did not start within {timeout} s"
        time.sleep(0.02)  # waiting on another process's file: there is no event to wait on
    assert oct(info_path.stat().st_mode & 0o777) == "0o600"
    return proc, json.loads(info_path.read_text())["url"]


def api_get(url: str, token: str, path: str, timeout: float = 30) -> dict:
    """GET one of the backend's JSON endpoints (``/api/...``) with its token."""
    req = urllib.request.Request(f"{url}{path}", headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def runtime_info(url: str, token: str, wait: float) -> dict:
    """``/api/runtime``; with ``wait`` > 0 it answers once the zygote and the spare pool settle."""
    return api_get(url, token, f"/api/runtime?wait={wait}", timeout=wait + 10)


def stop_backend(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(60)
