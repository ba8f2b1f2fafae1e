"""The backend's only door, assembled: the REST routes (rest.py), the kernel websocket
(kernels.py) and the worker websocket (workers.py), all behind one check of who calls (auth.py).
"""
from __future__ import annotations

from fastapi import FastAPI, WebSocket

from jupyter_gpu import __version__

from jupyter_gpu_backend.api.auth import Auth, Unauthorized, unauthorized
from jupyter_gpu_backend.api.kernels import Kernels
from jupyter_gpu_backend.api.rest import add_routes
from jupyter_gpu_backend.api.workers import serve_worker
from jupyter_gpu_backend.config import BackendConfig
from jupyter_gpu_backend.scheduling.scheduler import Scheduler


def create_app(config: BackendConfig, scheduler: Scheduler) -> tuple[FastAPI, Kernels]:
    auth = Auth(config)
    kernels = Kernels(config, scheduler, auth)
    # the docs and the schema are routes of rest.py, behind the token like every other
    app = FastAPI(title="jupyter-gpu backend", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_exception_handler(Unauthorized, unauthorized)
    add_routes(app, scheduler, kernels, auth)

    @app.websocket("/ws/session/{session_id}")
    async def session_ws(ws: WebSocket, session_id: str):
        await kernels.connect(ws, session_id)

    @app.websocket("/ws/worker")
    async def worker_ws(ws: WebSocket):
        await serve_worker(scheduler, ws)

    return app, kernels
