"""The backend's door (api/): one token check for every REST route and for the kernel websocket;
a worker is let in only with an id its runtime is starting."""
from __future__ import annotations

import warnings

import pytest
from fastapi.routing import APIRoute
from starlette.routing import Route
from starlette.websockets import WebSocketDisconnect

from jupyter_gpu_backend.api.app import create_app
from jupyter_gpu_backend.api.auth import Auth
from jupyter_gpu_backend.config import BackendConfig
from jupyter_gpu_backend.scheduling.scheduler import Scheduler
from tests.unit.backend.fakes import FakeRuntime

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette would rather it used httpx2; it works as is with httpx
    from starlette.testclient import TestClient

TOKEN = "secret-token"


@pytest.fixture
def app():
    app, _ = create_app(BackendConfig(token=TOKEN), Scheduler(FakeRuntime(), 5.0))
    return app


def test_every_rest_route_depends_on_the_one_token_check(app):
    # served at once (app.py): the websockets (their own check) and /api/health; the rest by FastAPI
    assert {r.path for r in app.routes if isinstance(r, Route)} == {"/api/health"}
    api = [r for r in app.state.rest.build().routes if isinstance(r, APIRoute) and r.path.startswith("/api/")]
    assert {r.path for r in api} == {"/api/health", "/api/status", "/api/runtime", "/api/pools", "/api/cells",
                                     "/api/queue"}
    for route in api:
        assert any(isinstance(d.call, Auth) for d in route.dependant.dependencies), route.path


@pytest.mark.parametrize("path", ["/api/health", "/api/status", "/api/runtime", "/api/pools", "/api/cells",
                                  "/api/queue"])
def test_a_rest_call_without_the_token_is_refused(app, path):
    client = TestClient(app)
    for headers in ({}, {"Authorization": "token wrong"}):
        r = client.get(path, headers=headers)
        assert (r.status_code, r.json()) == (401, {"error": "missing or wrong token"})
    assert client.get(path, headers={"Authorization": f"token {TOKEN}"}).status_code == 200
    assert client.get(f"{path}?token={TOKEN}").status_code == 200


def test_status_says_who_calls(app):
    r = TestClient(app).get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.json() == {"runtime": "fake", "offers": ["T4", "cpu"], "user": "local", "sessions": {}}


def test_the_kernel_websocket_refuses_a_wrong_token(app):
    with pytest.raises(WebSocketDisconnect) as e:
        with TestClient(app).websocket_connect("/ws/session/s-1", headers={"Authorization": "token wrong"}):
            pass
    assert (e.value.code, e.value.reason) == (1008, "missing or wrong token")


def test_the_worker_websocket_refuses_a_worker_nobody_started(app):
    with pytest.raises(WebSocketDisconnect) as e:
        with TestClient(app).websocket_connect("/ws/worker", headers={"X-Worker-Id": "w-nobody"}):
            pass
    assert (e.value.code, e.value.reason) == (1008, "unknown worker")


def test_the_docs_and_the_schema_are_behind_the_token_too(app):
    client = TestClient(app)
    for path in ("/docs", "/redoc", "/openapi.json"):
        r = client.get(path)
        assert (r.status_code, r.json()) == (401, {"error": "missing or wrong token"}), path
    schema = client.get("/openapi.json", headers={"Authorization": f"token {TOKEN}"}).json()
    assert "/api/health" in schema["paths"] and "/docs" not in schema["paths"]
    page = client.get(f"/docs?token={TOKEN}")
    assert page.status_code == 200 and f"/openapi.json?token={TOKEN}" in page.text  # the page loads it so
