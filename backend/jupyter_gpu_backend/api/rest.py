"""The REST routes (``/api/...``), every one behind the token (``Depends(auth)``: its user, or 401).

``health`` (liveness, for the kernel and the lab extension to find a backend), ``status`` (the
caller's sessions and leases), ``runtime`` (the runtime's state; ``?wait=S`` waits until ready),
``pools`` (seconds and dollars per pool from the ledger), ``cells`` (the caller's ledger rows),
``queue`` (the caller's cells waiting for a worker).  A user sees their own sessions and cells only.
The API's own docs (``/docs``, ``/redoc``) and schema (``/openapi.json``) are behind the token too: a
docs page opened with ``?token=T`` loads the schema with it.
"""
from __future__ import annotations

import asyncio
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Query, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

from jupyter_gpu import __version__
from jupyter_gpu._wire.pools import DEFAULT_IMAGE, pool_key

from jupyter_gpu_backend.accounting.ledger import cell_id
from jupyter_gpu_backend.api.app import health_body
from jupyter_gpu_backend.api.auth import Auth, Unauthorized, token_of, unauthorized
from jupyter_gpu_backend.api.kernels import Kernels
from jupyter_gpu_backend.scheduling.dedicated import pool_usage
from jupyter_gpu_backend.scheduling.scheduler import Scheduler


def rest_app(scheduler: Scheduler, kernels: Kernels, auth: Auth) -> FastAPI:
    """The REST routes' app (app.py mounts it, built off the event loop)."""
    # the docs and the schema are routes of this module, behind the token like every other
    app = FastAPI(title="jupyter-gpu backend", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_exception_handler(Unauthorized, unauthorized)
    add_routes(app, scheduler, kernels, auth)
    return app


def add_routes(app: FastAPI, scheduler: Scheduler, kernels: Kernels, auth: Auth) -> None:
    @app.get("/api/health")
    async def health(user: str = Depends(auth)):  # (served by app.py; here for the schema)
        return health_body(scheduler, kernels)

    @app.get("/api/status")
    async def status(user: str = Depends(auth)):
        return {
            "runtime": scheduler.runtime.name,
            "offers": scheduler.runtime.offers(),
            "user": user,
            # a user sees their own sessions only
            "sessions": {sid: scheduler.status(s) for sid, s in scheduler.sessions.items() if s.user == user},
        }

    @app.get("/api/runtime")
    async def runtime(wait: float = Query(0.0, ge=0, allow_inf_nan=False), user: str = Depends(auth)):
        """The runtime's state; ``?wait=S`` first waits up to S seconds until it is fully ready
        (a number of seconds: ``nan`` or a negative wait is 422, as a wrongly typed one)."""
        runtime = scheduler.runtime
        ready = await runtime.wait_ready(min(wait, 300.0))
        if ready and wait:
            ready = await scheduler.spares.wait_full(min(wait, 300.0))  # min_warm spares started too
        if ready and wait:
            ready = await scheduler.dedicated.wait_full(min(wait, 300.0))  # and the dedicated workers, free
        return {"runtime": runtime.name, "ready": ready, "offers": runtime.offers(),
                "warm_pool": scheduler.spares.sizes(), "min_warm": scheduler.spares.min_warm,
                "images": {n: {} for n in sorted(scheduler.images)},  # the runtime's describe() says more
                "dedicated": scheduler.dedicated.status(), "autoscale": scheduler.autoscale.status(),
                **runtime.describe()}

    @app.get("/api/pools")
    async def pools(user: str = Depends(auth)):
        """Seconds and dollars per pool (dedicated / serverless) and GPU type, from the ledger."""
        return {"pools": await asyncio.to_thread(pool_usage, scheduler.ledger), "dedicated": scheduler.dedicated.status()}

    @app.get("/api/cells")
    async def cells(session: str | None = None, limit: int = 1000, user: str = Depends(auth)):
        """The caller's cells from the ledger, newest first (everything recorded so far)."""
        rows = await asyncio.to_thread(scheduler.ledger.cells, user, session, max(1, min(limit, 10000)))
        return {"cells": rows or []}

    @app.get("/api/queue")
    async def queue(user: str = Depends(auth)):
        """The caller's cells waiting for a worker: position in line (max_workers), or None while
        their worker cold-starts.  Read-only; the lab sidebar shows it."""
        mine = {sid for sid, s in scheduler.sessions.items() if s.user == user}
        rows = await asyncio.to_thread(scheduler.ledger.queued_cells, user)
        return {"queued": [{"cell": cell_id(row, s), "session": s, "gpu": g, "image": i or DEFAULT_IMAGE,
                            "position": scheduler.capacity.position(pool_key(g, i), row)}
                           for row, s, g, i in rows or [] if s in mine]}

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(user: str = Depends(auth)):
        return app.openapi()

    def schema_url(request: Request) -> str:
        """The schema's URL for a docs page, with the token it was opened with (the page's own
        request for it carries no header)."""
        return "/openapi.json?" + urlencode({"token": token_of(request.headers, request.query_params)})

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request, user: str = Depends(auth)):
        return get_swagger_ui_html(openapi_url=schema_url(request), title=f"{app.title} - Swagger UI")

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request, user: str = Depends(auth)):
        return get_redoc_html(openapi_url=schema_url(request), title=f"{app.title} - ReDoc")
