"""The backend's only door: token checks, the kernel and worker websockets, and REST status.

Kernel connections: ``/ws/session/{session_id}`` with ``Authorization: token T``.  Worker
connections: ``/ws/worker`` with the one-time secret its runtime gave it.  A malformed message
closes only the connection that sent it (with a close reason naming the problem); the backend
keeps serving everyone else.
"""
from __future__ import annotations

import asyncio
import logging
import time

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect

from jupyter_gpu import __version__
from jupyter_gpu._wire import framing, messages, shm
from jupyter_gpu.errors import GpuError
from jupyter_gpu._wire.pools import DEFAULT_IMAGE, pool_key

from jupyter_gpu_backend.accounting.budgets import Budgets
from jupyter_gpu_backend.scheduling.capacity import QueueCancelled
from jupyter_gpu_backend.config import BackendConfig
from jupyter_gpu_backend.scheduling.dedicated import pool_usage
from jupyter_gpu_backend.scheduling.scheduler import Conn, Scheduler

log = logging.getLogger("jupyter_gpu_backend")

CLOSE_POLICY = 1008  # wrong credentials
CLOSE_PROTOCOL = 1002
CLOSE_TOO_BIG = 1009
CLOSE_RESTART = 1012
RECONNECT_GRACE = 30.0  # a kernel's workers outlive a dropped connection this long


class Disconnected(Exception):
    pass


def token_of(headers, query) -> str:
    auth = headers.get("authorization", "")
    for scheme in ("token ", "bearer "):
        if auth.lower().startswith(scheme):
            return auth[len(scheme) :].strip()
    return query.get("token", "")


async def recv_frame(ws: WebSocket):
    msg = await ws.receive()
    if msg["type"] == "websocket.disconnect":
        raise Disconnected()
    data = msg.get("bytes")
    return data if data is not None else msg.get("text", "")


class Gateway:
    def __init__(self, config: BackendConfig, scheduler: Scheduler):
        self.config = config
        self.scheduler = scheduler
        self.clients = 0
        self.closing = False  # set once an idle embedded backend has decided to exit
        self.last_client_left = time.monotonic()
        self._close_tasks: dict[str, asyncio.TimerHandle] = {}
        self.host_id = shm.host_id()
        self.budgets = Budgets.attach(config, scheduler)  # None without --session/--user-budget

    def user_of(self, token: str) -> str | None:
        return self.config.user_of(token)

    # -- kernel side ---------------------------------------------------------------------------
    async def session_ws(self, ws: WebSocket, session_id: str) -> None:
        user = self.user_of(token_of(ws.headers, ws.query_params))
        if user is None:
            await ws.close(code=CLOSE_POLICY, reason="missing or wrong token")
            return
        await ws.accept()
        if self.closing:  # accepted, then closed: the kernel retries with a fresh backend
            await ws.close(code=CLOSE_RESTART, reason="this backend is exiting")
            return
        try:
            session = self.scheduler.session(session_id, user)
        except PermissionError as e:  # another user's session id: nothing of it is reachable
            await ws.close(code=CLOSE_POLICY, reason=str(e)[:120])
            return
        pending_close = self._close_tasks.pop(session_id, None)
        if pending_close is not None:
            pending_close.cancel()
        conn = Conn(ws)
        session.conn = conn
        self.clients += 1
        try:
            await conn.send(
                {
                    "type": messages.WELCOME,
                    "version": __version__,
                    "protocol": framing.PROTOCOL_VERSION,
                    "session": session_id,
                    "host_id": self.host_id if self.scheduler.runtime.shares_host else None,
                    "runtime": self.scheduler.runtime.name,
                    "offers": self.scheduler.runtime.offers(),
                    "default_gpu": self.scheduler.runtime.default_gpu(),
                    # the most devices a worker may get per type ("A100:2"); absent: one
                    "devices": self.scheduler.runtime.max_devices() or {},
                    "images": sorted(self.scheduler.images),  # what `%%gpu --image NAME` may name
                }
            )
            while True:
                frame = await recv_frame(ws)
                try:
                    header, inline = framing.parse_first(frame)
                    await self.on_client_message(session, header, inline, ws)
                except framing.InvalidMessage as e:  # well framed, wrongly typed: refused, the connection kept
                    await self._drain(e.header, ws)
                    cell = e.header.get("cell")
                    await self._fail(session, cell if isinstance(cell, str) else None, "bad_request",
                                     f"malformed message: {e}")
                except framing.ProtocolError as e:
                    await conn.send(messages.failure("protocol", f"malformed message: {e}"))
                    await ws.close(code=CLOSE_PROTOCOL, reason=str(e)[:120])
                    return
        except (Disconnected, WebSocketDisconnect):
            pass
        finally:
            self.clients -= 1
            if session.conn is conn:
                session.conn = None
                loop = asyncio.get_running_loop()
                self._close_tasks[session_id] = loop.call_later(
                    RECONNECT_GRACE, lambda: asyncio.ensure_future(self._close_session(session_id))
                )
            if self.clients == 0:
                self.last_client_left = time.monotonic()

    async def _close_session(self, session_id: str) -> None:
        self._close_tasks.pop(session_id, None)
        session = self.scheduler.sessions.get(session_id)
        if session is not None and session.conn is None:
            await self.scheduler.close_session(session)

    async def on_client_message(self, session, header: dict, inline, ws: WebSocket) -> None:
        kind = header["type"]
        if kind == messages.EXECUTE:
            await self.on_execute(session, header, inline, ws)
        elif kind == messages.INTERRUPT:
            await self.scheduler.interrupt(session, header.get("cell", ""))
        elif kind == messages.KILL:
            await self.scheduler.kill(session, header.get("cell", ""), header.get("gpu"), header.get("image"))
        elif kind == messages.INPUT_REPLY:
            await self.scheduler.input_reply(session, header)
        elif kind == messages.LANE_LOST:
            asyncio.ensure_future(self._lane_lost(session, header))  # it waits for the worker's exit
        elif kind == messages.RELEASE:
            n = await self.scheduler.release(session)
            await session.conn.send({"type": messages.STATUS_REPLY, "released": n, **self.scheduler.status(session)})
        elif kind == messages.PREWARM:
            asyncio.ensure_future(self._prewarm(session, header))  # a cold start must not block the loop
        elif kind == messages.STATUS:
            await self.scheduler.lane_cells.settle(session)
            await session.conn.send({"type": messages.STATUS_REPLY, **self.scheduler.status(session)})
        else:
            await session.conn.send(messages.failure("bad_request", f"unknown message type {kind!r}"))

    async def on_execute(self, session, header: dict, inline, ws: WebSocket) -> None:
        size = framing.payload_size(header)
        cell = header.get("cell")
        if not isinstance(cell, str) or not isinstance(header.get("code"), str):
            await self._drain(header, ws)
            await self._fail(session, cell, "bad_request", "execute needs a string 'cell' and 'code'")
            return
        if size > self.config.max_payload:
            await self._drain(header, ws)
            await self._fail(
                session, cell, "payload_too_large",
                f"cell inputs are {size} bytes; this backend accepts at most {self.config.max_payload}",
            )
            return
        try:
            warning = self.budgets.check(session.id, session.user) if self.budgets else None
            run = self.scheduler.begin(session, header)
        except GpuError as e:
            await self._drain(header, ws)
            await self._fail(session, cell, e.code, str(e))
            return
        if warning:
            await session.emit({"type": messages.STREAM, "cell": cell, "name": "stderr", "text": warning})
        if self.scheduler.stale(session, run, header):
            await self._drain(header, ws)
            await session.emit({"type": messages.RESEND, "cell": cell, "reason": "the worker holding your values is gone"})
            return
        lease = self.scheduler.warm_lease(session, run.key)
        if lease is not None:
            # warm path: forward frames as they arrive, no buffering
            frames = _iter_frames(header, ws)
            self.scheduler.cells.started(run)
            try:
                await self.scheduler.dispatch(run, lease, header, inline, more=frames)
            except (Disconnected, WebSocketDisconnect, framing.ProtocolError):
                # the worker holds half a message: it cannot be trusted with the next one
                lease.worker.killed_reason = "the kernel disconnected in the middle of sending the cell"
                self.scheduler.runtime.kill(lease.worker.handle)
                raise
            async for _ in frames:  # what a failed send left unread
                pass
            return
        frames = [f async for f in _iter_frames(header, ws)]
        asyncio.ensure_future(self._cold_execute(run, header, inline, frames))

    async def _cold_execute(self, run, header, inline, frames) -> None:
        cells = self.scheduler.cells
        cells.queued(run)
        self.scheduler.starting[run.id] = run  # an interrupt meanwhile is kept for after the start
        try:
            lease = await self.scheduler.lease_for(run, header.get("keep_warm"))
            if not run.interrupts:
                cells.running(run)
                # the live status line goes from "queued"/"cold start" to "running" (a warm cell
                # shows neither); still `starting` meanwhile, so a stop now is kept too
                await run.session.emit({"type": messages.PHASE, "cell": run.id, "phase": "running", "gpu": run.gpu})
        except GpuError as e:
            cells.failed(run)
            await self._fail(run.session, run.id, e.code, str(e))
            return
        except QueueCancelled:
            run.queue = time.monotonic() - run.t_submit  # it waited in line until now
            await self._interrupted_before_start(run, f"in the queue for {run.gpu}")
            return
        finally:
            self.scheduler.starting.pop(run.id, None)
        if run.interrupts:  # the stop button during the cold start: the worker stays, warm and leased
            await self._interrupted_before_start(run, f"while a worker for {run.gpu} was starting; it is warm now")
            return
        # no await between that check and dispatch marking the worker busy with this cell: a stop
        # from here on finds the cell there (Scheduler.interrupt) and goes to the worker after it
        await self.scheduler.dispatch(run, lease, header, inline, frames)

    async def _interrupted_before_start(self, run, where: str) -> None:
        waited = time.monotonic() - run.t_submit
        timings = {"queue": run.queue, "cold_start": run.cold_start}
        self.scheduler.cells.interrupted(run, timings)
        await run.session.emit({"type": messages.ERROR, "cell": run.id, "ename": "KeyboardInterrupt",
                                "evalue": f"interrupted after {waited:.1f} s {where}", "traceback": []})
        await run.session.emit(messages.done(run.id, "interrupted", timings, gpu=run.gpu, cold=run.cold))

    async def _lane_lost(self, session, header: dict) -> None:
        await session.emit(await self.scheduler.lane_cells.lost(session, header))

    async def _prewarm(self, session, header: dict) -> None:
        try:
            info = await self.scheduler.prewarm(
                session, header.get("gpu") or self.scheduler.runtime.default_gpu(), header.get("keep_warm"),
                header.get("image"),
            )
        except GpuError as e:
            await session.emit(messages.failure(e.code, str(e)))
            return
        await session.emit({"type": messages.STATUS_REPLY, "prewarmed": info, **self.scheduler.status(session)})

    async def _fail(self, session, cell, code: str, message: str) -> None:
        await session.emit(messages.failure(code, message, cell=cell))

    async def _drain(self, header: dict, ws: WebSocket) -> None:
        async for _ in _iter_frames(header, ws):
            pass

    # -- worker side ---------------------------------------------------------------------------
    async def worker_ws(self, ws: WebSocket) -> None:
        worker_id = ws.headers.get("x-worker-id", "")
        secret = ws.headers.get("x-worker-secret", "")
        if worker_id not in self.scheduler.pending:
            await ws.close(code=CLOSE_POLICY, reason="unknown worker")
            return
        await ws.accept()
        conn = Conn(ws)
        try:
            header, _ = framing.parse_first(await recv_frame(ws))
            if header["type"] != messages.REGISTER:
                raise framing.ProtocolError("a worker's first message must be 'register'")
            worker = self.scheduler.register(worker_id, secret, conn, header)
        except (framing.ProtocolError, PermissionError) as e:
            await conn.send(messages.failure("unauthorized", str(e)))
            await ws.close(code=CLOSE_POLICY, reason=str(e)[:120])
            return
        except (Disconnected, WebSocketDisconnect):
            return
        await conn.send({"type": messages.REGISTERED, "worker": worker.id})
        try:
            while True:
                header, inline = framing.parse_first(await recv_frame(ws))
                frames = [f async for f in _iter_frames(header, ws)]
                await self.scheduler.worker_event(worker, header, inline, frames)
        except (Disconnected, WebSocketDisconnect):
            pass
        except framing.ProtocolError as e:
            log.warning("worker %s sent a malformed message: %s", worker.id, e)
            await ws.close(code=CLOSE_PROTOCOL, reason=str(e)[:120])
        finally:
            await self.scheduler.worker_gone(worker)


async def _iter_frames(header: dict, ws: WebSocket):
    for _ in range(framing.follow_frames(header)):
        frame = await recv_frame(ws)
        if isinstance(frame, str):
            raise framing.ProtocolError("expected a binary payload frame, got a text frame")
        yield frame


def create_app(config: BackendConfig, scheduler: Scheduler) -> tuple[FastAPI, Gateway]:
    gateway = Gateway(config, scheduler)
    app = FastAPI(title="jupyter-gpu backend", version=__version__)

    def authorized(request: Request) -> str | None:
        """The caller's user name, or None."""
        return gateway.user_of(token_of(request.headers, request.query_params))

    @app.get("/api/health")
    async def health(request: Request):
        if not authorized(request):
            return JSONResponse({"error": "missing or wrong token"}, status_code=401)
        return {"ok": True, "version": __version__, "runtime": scheduler.runtime.name, "clients": gateway.clients}

    @app.get("/api/status")
    async def status(request: Request):
        user = authorized(request)
        if not user:
            return JSONResponse({"error": "missing or wrong token"}, status_code=401)
        return {
            "runtime": scheduler.runtime.name,
            "offers": scheduler.runtime.offers(),
            "user": user,
            # a user sees their own sessions only
            "sessions": {sid: scheduler.status(s) for sid, s in scheduler.sessions.items() if s.user == user},
        }

    @app.get("/api/runtime")
    async def runtime(request: Request, wait: float = 0.0):
        """The runtime's state; ``?wait=S`` first waits up to S seconds until it is fully ready."""
        if not authorized(request):
            return JSONResponse({"error": "missing or wrong token"}, status_code=401)
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
    async def pools(request: Request):
        """Seconds and dollars per pool (dedicated / serverless) and GPU type, from the ledger."""
        if not authorized(request):
            return JSONResponse({"error": "missing or wrong token"}, status_code=401)
        return {"pools": await asyncio.to_thread(pool_usage, scheduler.ledger), "dedicated": scheduler.dedicated.status()}

    @app.get("/api/cells")
    async def cells(request: Request, session: str | None = None, limit: int = 1000):
        """The caller's cells from the ledger, newest first (everything recorded so far)."""
        user = authorized(request)
        if not user:
            return JSONResponse({"error": "missing or wrong token"}, status_code=401)
        rows = await asyncio.to_thread(scheduler.ledger.cells, user, session, max(1, min(limit, 10000)))
        return {"cells": rows or []}

    @app.get("/api/queue")
    async def queue(request: Request):
        """The caller's cells waiting for a worker: position in line (max_workers), or None while
        their worker cold-starts.  Read-only; the lab sidebar shows it."""
        user = authorized(request)
        if not user:
            return JSONResponse({"error": "missing or wrong token"}, status_code=401)
        mine = {sid for sid, s in scheduler.sessions.items() if s.user == user}
        rows = await asyncio.to_thread(scheduler.ledger.queued_cells, user)
        return {"queued": [{"cell": c, "session": s, "gpu": g, "image": i or DEFAULT_IMAGE,
                            "position": scheduler.capacity.position(pool_key(g, i), c)}
                           for c, s, g, i in rows or [] if s in mine]}

    @app.websocket("/ws/session/{session_id}")
    async def session_ws(ws: WebSocket, session_id: str):
        await gateway.session_ws(ws, session_id)

    @app.websocket("/ws/worker")
    async def worker_ws(ws: WebSocket):
        await gateway.worker_ws(ws)

    return app, gateway
