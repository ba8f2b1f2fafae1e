"""The backend's only door, assembled: the kernel websocket (kernels.py), the worker websocket
(workers.py) and ``/api/health`` served by Starlette at once; the other REST routes (rest.py, on
FastAPI) built off the event loop once the backend is up.  All behind one check of who calls (auth.py).

Why two layers: importing FastAPI (pydantic's models) is 0.24 s of the embedded backend's 0.46 s of
imports, and a notebook's first ``%%gpu`` cell waits for the backend to start; that cell needs only
the websockets and the health check.  The REST routes (the lab sidebar, ``jupyter-gpu`` commands)
are built at their first request, which waits for them (~0.3 s, once): built sooner, in a thread, the
import would take a core from the notebook's first cells on a 2-core machine.
"""
from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from jupyter_gpu import __version__

from jupyter_gpu_backend.api.auth import Auth, unauthorized
from jupyter_gpu_backend.api.kernels import Kernels
from jupyter_gpu_backend.api.workers import serve_worker
from jupyter_gpu_backend.config import BackendConfig
from jupyter_gpu_backend.scheduling.scheduler import Scheduler


def health_body(scheduler: Scheduler, kernels: Kernels) -> dict:
    """``GET /api/health``'s answer (here and in rest.py's schema)."""
    return {"ok": True, "version": __version__, "runtime": scheduler.runtime.name, "clients": kernels.clients}


class LazyRest:
    """An ASGI app: rest.py's FastAPI app, built in a thread at its first request."""

    def __init__(self, scheduler: Scheduler, kernels: Kernels, auth: Auth):
        self._args = (scheduler, kernels, auth)
        self._built: asyncio.Future | None = None

    def start(self) -> asyncio.Future:
        if self._built is None:
            self._built = asyncio.ensure_future(asyncio.to_thread(self.build))
        return self._built

    def build(self):
        from jupyter_gpu_backend.api.rest import rest_app

        return rest_app(*self._args)

    async def __call__(self, scope, receive, send) -> None:
        app = await asyncio.shield(self.start())
        await app(scope, receive, send)


def create_app(config: BackendConfig, scheduler: Scheduler) -> tuple[Starlette, Kernels]:
    auth = Auth(config)
    kernels = Kernels(config, scheduler, auth)
    rest = LazyRest(scheduler, kernels, auth)

    async def session_ws(ws: WebSocket) -> None:
        await kernels.connect(ws, ws.path_params["session_id"])

    async def worker_ws(ws: WebSocket) -> None:
        await serve_worker(scheduler, ws)

    async def health(request: Request) -> JSONResponse:
        if not auth.user_of(request):
            return await unauthorized(request, None)  # (the REST routes' answer too)
        return JSONResponse(health_body(scheduler, kernels))

    app = Starlette(routes=[WebSocketRoute("/ws/session/{session_id}", session_ws),
                            WebSocketRoute("/ws/worker", worker_ws),
                            Route("/api/health", health, methods=["GET"]),
                            Mount("", app=rest)])  # every other path: FastAPI's (its 404s and 422s)
    app.state.rest = rest
    return app, kernels
