"""A real Jupyter server (or JupyterLab) process for the lab-extension tests.

It binds 127.0.0.1 on a free port with a token, runs in temp dirs (root, runtime, settings), and
finds the embedded backend through the same ``JUPYTER_GPU_RUNTIME_DIR`` as its kernels.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.helpers import wait_pid_exit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str  # http://127.0.0.1:PORT{base_url}, ending in "/"
    token: str
    root: Path
    runtime_dir: Path  # the server's JUPYTER_RUNTIME_DIR (kernel connection files)
    proc: subprocess.Popen
    log: Path

    def get(self, path: str, token: bool = True, headers: dict | None = None) -> tuple[int, dict | str]:
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"token {self.token}"
        req = urllib.request.Request(self.url + path.lstrip("/"), headers=h)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, _body(r.read())
        except urllib.error.HTTPError as e:
            return e.code, _body(e.read())

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict | str]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path.lstrip("/"), data=data, method=method,
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, _body(r.read())
        except urllib.error.HTTPError as e:
            return e.code, _body(e.read())


def _body(raw: bytes):
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


NO_NEWS = {"fetchNews": "false", "checkForUpdates": False}


@contextmanager
def jupyter(tmp: Path, env: dict, app: str = "server", base_url: str = "/", start_timeout: float = 90.0):
    """Start ``jupyter {app}`` and yield a :class:`Server` once its REST API answers."""
    port, token = free_port(), secrets.token_hex(16)
    root, runtime, settings, config = (tmp / n for n in ("root", "jpruntime", "user-settings", "jpconfig"))
    for d in (root, runtime, settings, config):
        d.mkdir(parents=True, exist_ok=True)
    notif = settings / "@jupyterlab" / "apputils-extension"
    notif.mkdir(parents=True, exist_ok=True)
    (notif / "notification.jupyterlab-settings").write_text(json.dumps(NO_NEWS))  # no news toast
    env = {**env, "JUPYTER_RUNTIME_DIR": str(runtime), "JUPYTER_CONFIG_DIR": str(config)}
    log = tmp / f"jupyter-{app}.log"
    cmd = [sys.executable, "-m", "jupyter", app, "--allow-root", "--no-browser",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           f"--ServerApp.base_url={base_url}"]
    if app == "lab":
        cmd += [f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={tmp / 'workspaces'}"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                cwd=root, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}{base_url}", token, root, runtime, proc, log)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter {app} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if server.get("api/status")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"jupyter {app} did not answer within {start_timeout:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)  # polling a port with a deadline: a process gives no readiness event
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the server shuts its kernels down
            if not wait_pid_exit(proc.pid, 30):
                proc.kill()
        proc.wait(timeout=30)
