"""Routes of the server extension, all under ``{base_url}jupyter-gpu/``, all authenticated
(``@web.authenticated``) and authorized by the server's Authorizer (``@authorized``, resource
``kernels``: the sidebar shows the notebook kernels' workers and spend, so a user Jupyter keeps
from the kernels is kept from this too).  They ask only the backend the server is configured with
(``backend.find()``): never one a request names (a request forgery from the server's host)."""
from __future__ import annotations

import asyncio
import json

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from jupyter_gpu.labserver import backend

# backend GET routes the proxy passes through (read-only), with the query parameters it forwards
PROXIED = {"health": (), "status": (), "runtime": (), "cells": ("session", "limit"), "queue": ()}


AUTH_RESOURCE = "kernels"


class _Base(APIHandler):
    auth_resource = AUTH_RESOURCE

    def backend(self) -> tuple[str, str, str]:
        """The server's backend (JUPYTER_GPU_URL/TOKEN of the server, else the embedded one): no
        request picks another."""
        return backend.find()

    def reply(self, data: dict, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))


class CatalogHandler(_Base):
    @tornado.web.authenticated
    @authorized
    async def get(self):
        self.reply({"catalog": backend.catalog([])})


class ProxyHandler(_Base):
    @tornado.web.authenticated
    @authorized
    async def get(self, route: str):
        if route not in PROXIED:
            raise tornado.web.HTTPError(404)
        try:
            url, token, _ = self.backend()
        except backend.NoBackend as e:
            self.reply({"error": str(e)}, 503)
            return
        query = {k: self.get_query_argument(k) for k in PROXIED[route] if self.get_query_argument(k, None) is not None}
        try:
            self.reply(await backend.get(url, token, f"/api/{route}", **query))
        except backend.BackendError as e:
            self.reply({"error": str(e)}, e.status if e.status in (401, 403, 404) else 502)


class StateHandler(_Base):
    """Everything the sidebar shows for one notebook's kernel (``?kernel=ID``), in one request."""

    @tornado.web.authenticated
    @authorized
    async def get(self):
        kernel = self.get_query_argument("kernel", "") or ""
        state = {"backend": {"source": "none", "offers": []}, "catalog": [], "sessions": [], "workers": [],
                 "queued": [], "cost": backend.cost([])}
        try:
            url, token, source = self.backend()
        except backend.NoBackend:
            state["catalog"] = backend.catalog([])
            self.reply(state)
            return
        info = state["backend"]
        info.update(source=source, url=url)
        try:
            status, runtime, queue = await asyncio.gather(
                backend.get(url, token, "/api/status"),
                backend.get(url, token, "/api/runtime"),
                backend.get(url, token, "/api/queue"),
                return_exceptions=True,
            )
            for r in (status, runtime):
                if isinstance(r, Exception):
                    raise r
            info.update(runtime=status.get("runtime"), offers=status.get("offers", []),
                        images=sorted(runtime.get("images") or {"default": {}}),  # the sidebar's image picker
                        min_warm=runtime.get("min_warm"), warm_pool=runtime.get("warm_pool", {}))
            prefix = f"{kernel[:8]}-" if kernel else ""
            mine = [sid for sid in status.get("sessions", {}) if kernel and sid.startswith(prefix)]
            state["sessions"] = mine
            for sid in mine:
                for lease in status["sessions"][sid].get("leases", []):
                    state["workers"].append({"session": sid, **lease})
            if not isinstance(queue, Exception):  # an older backend has no /api/queue
                state["queued"] = [q for q in queue.get("queued", []) if q.get("session") in mine]
            cells = []
            for sid in mine:
                cells += (await backend.get(url, token, "/api/cells", session=sid)).get("cells", [])
            state["cost"] = backend.cost(cells, state["workers"])
        except backend.BackendError as e:
            info["error"] = str(e)
        state["catalog"] = backend.catalog(info.get("offers", []))
        self.reply(state)


def routes(base_url: str) -> list[tuple]:
    prefix = url_path_join(base_url, "jupyter-gpu")
    return [
        (url_path_join(prefix, "state"), StateHandler),
        (url_path_join(prefix, "catalog"), CatalogHandler),
        (url_path_join(prefix, "api", r"([a-z]+)"), ProxyHandler),
    ]


def setup_handlers(web_app) -> None:
    web_app.add_handlers(".*$", routes(web_app.settings.get("base_url", "/")))
