"""Issue 24, finding 10 (routes): every door of the backend refuses a caller without a token.

The routes are enumerated from the app itself (``create_app``), so a route added later without
the token check fails this test; each one is then asked, without a token, of a real backend
process on 127.0.0.1.  Only ``PUBLIC`` may answer (none today).
"""
from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest
from starlette.routing import Mount, Route, WebSocketRoute
from websockets.exceptions import InvalidStatus

from jupyter_gpu._client.connection import open_websocket
from tests.integration.backend_process import start_backend, stop_backend

pytestmark = pytest.mark.timeout(120)
TOKEN = "routes-token"
PUBLIC: set[str] = set()  # paths that answer without a token on purpose (none)
DOCS = ("/docs", "/redoc", "/openapi.json")


def app_routes(tmp_path):
    """The routes of the app a backend serves, built in-process (nothing started)."""
    from jupyter_gpu_backend.api.app import create_app
    from jupyter_gpu_backend.config import BackendConfig
    from jupyter_gpu_backend.runtimes import make_runtime
    from jupyter_gpu_backend.scheduling.scheduler import Scheduler

    config = BackendConfig(token=TOKEN)
    scheduler = Scheduler(make_runtime("local", "ws://127.0.0.1:1/ws/worker", config.images), config.keep_warm)
    app, _ = create_app(config, scheduler)
    # the REST routes are a sub-app mounted at the root, built off the loop (app.py): enumerated too
    rest = [r for r in app.routes if isinstance(r, Mount) and r.app is app.state.rest]
    return [r for r in app.routes if r not in rest] + (app.state.rest.build().routes if rest else [])


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "x", path)


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    proc, url = start_backend(tmp_path_factory.mktemp("routes"), "--token", TOKEN)
    yield url
    stop_backend(proc)


def ask(url: str, method: str, token: str | None = None) -> int:
    headers = {"Authorization": f"token {token}"} if token else {}
    req = urllib.request.Request(url, method=method, headers=headers, data=b"{}" if method != "GET" else None)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_every_route_refuses_a_request_without_a_token(backend, tmp_path):
    routes = app_routes(tmp_path)
    http = [r for r in routes if isinstance(r, Route)]
    sockets = [r for r in routes if isinstance(r, WebSocketRoute)]
    assert not [r for r in routes if isinstance(r, Mount)], "a mounted sub-app: enumerate it too"
    assert len(http) >= 5 and len(sockets) >= 2, routes
    paths = {r.path for r in http}
    for path in DOCS:  # the API's docs are served only behind the token (or not at all)
        if path in paths:
            assert ask(backend + path, "GET", TOKEN) == 200, path
    checked = []
    for r in http:
        if r.path in PUBLIC:
            continue
        for method in sorted(r.methods - {"HEAD"}):
            status = ask(backend + concrete(r.path), method)
            assert status in (401, 403), f"{method} {r.path} without a token answered {status}"
            checked.append((method, r.path))
    for r in sockets:
        target = backend.replace("http", "ws", 1) + concrete(r.path)
        with pytest.raises(InvalidStatus) as e:
            open_websocket(target, {})
        assert e.value.response.status_code in (401, 403), r.path
        checked.append(("WS", r.path))
    assert len(checked) >= len(http) + len(sockets) - len(PUBLIC)


def test_docs_and_schema_need_the_token(backend):
    for path in DOCS:
        assert ask(backend + path, "GET") in (401, 403, 404), path
        assert ask(f"{backend}{path}?token=wrong", "GET") in (401, 403, 404), path
