"""Issue 24, finding 10 (lab server): the server extension checks Jupyter's authorization, not only
authentication, and talks to its configured backend only.

Before, a user whom the server's Authorizer (Jupyter's RBAC; JupyterHub's scopes) denies still
read every route of the extension, and a request header (``X-Jupyter-Gpu-Url``) made the server
fetch any URL it named, with whatever token the header gave: a request forgery from the Jupyter
server's host.  Both are tried against a real ``jupyter server``.
"""
from __future__ import annotations

import http.server
import threading

import pytest

from jupyter_gpu.labserver import handlers
from tests.conftest import _reap_backend as reap_backend, make_kernel_env
from tests.lab.server import jupyter

pytestmark = pytest.mark.timeout(180)

DENY = '''
from jupyter_server.auth.authorizer import Authorizer


class OnlyServerApi(Authorizer):
    """Allows Jupyter's own /api (the tests' readiness probe) and nothing else."""

    def is_authorized(self, handler, user, action, resource):
        return resource == "api"
'''


@pytest.fixture
def env(tmp_path):
    d = tmp_path / "gpu-runtime"
    d.mkdir()
    yield make_kernel_env(d)
    reap_backend(d)


class Recorder(http.server.BaseHTTPRequestHandler):
    seen: list = []

    def do_GET(self):
        Recorder.seen.append((self.path, self.headers.get("Authorization")))
        body = b'{"ok": true, "sessions": {}, "offers": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def elsewhere():
    """An HTTP service on this host that the extension was never configured to ask."""
    Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", Recorder.seen
    server.shutdown()
    server.server_close()


def test_a_request_header_cannot_point_the_server_at_another_url(tmp_path, env, elsewhere):
    target, seen = elsewhere
    forged = {"X-Jupyter-Gpu-Url": target, "X-Jupyter-Gpu-Token": "planted"}
    with jupyter(tmp_path, env) as server:
        for path in ("jupyter-gpu/state?kernel=0123456789", *(f"jupyter-gpu/api/{r}" for r in handlers.PROXIED)):
            status, _ = server.get(path, headers=forged)
            assert status in (200, 503), (path, status)
    assert seen == [], f"the Jupyter server fetched a URL a request header named: {seen}"


def test_routes_check_the_servers_authorizer(tmp_path, env):
    mod = tmp_path / "pymod"
    mod.mkdir()
    (mod / "deny_gpu.py").write_text(DENY)
    config = tmp_path / "jpconfig"
    config.mkdir()
    (config / "jupyter_server_config.py").write_text('c.ServerApp.authorizer_class = "deny_gpu.OnlyServerApi"\n')
    env = {**env, "PYTHONPATH": f"{mod}:{env.get('PYTHONPATH', '')}"}
    with jupyter(tmp_path, env) as server:
        assert server.get("api/status")[0] == 200  # authenticated, and allowed Jupyter's own API
        for pattern, _cls in handlers.routes("/"):
            paths = [pattern] if "(" not in pattern else [f"/jupyter-gpu/api/{r}" for r in handlers.PROXIED]
            for path in paths:
                status, body = server.get(path.lstrip("/"))
                assert status == 403, f"GET {path} by a user the Authorizer denies answered {status}: {body}"
