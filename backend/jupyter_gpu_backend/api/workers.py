"""The worker websocket, ``/ws/worker``: a worker started by a runtime dials out to it, with the
worker id (``X-Worker-Id``) and the one-time secret (``X-Worker-Secret``) the runtime gave it.

An unknown worker id is refused before the websocket is accepted (1008); the first message must
be ``register`` with the right secret, else ``failure`` ``unauthorized`` and 1008.  Both are logged
(a forged registration, or a replayed one: a registered worker's id is pending no more).  Then every
message of the worker goes to the scheduler, and its end (a close, or 1002 for a malformed message)
is the scheduler's ``worker_gone``.
"""
from __future__ import annotations

import logging

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect

from jupyter_gpu._wire import framing, messages

from jupyter_gpu_backend.api.frames import CLOSE_POLICY, CLOSE_PROTOCOL, Disconnected, iter_frames, recv_frame
from jupyter_gpu_backend.scheduling.scheduler import Conn, Scheduler

log = logging.getLogger("jupyter_gpu_backend")


async def serve_worker(scheduler: Scheduler, ws: WebSocket) -> None:
    worker_id = ws.headers.get("x-worker-id", "")
    secret = ws.headers.get("x-worker-secret", "")
    if worker_id not in scheduler.pending:  # forged, or replayed (a registered worker is pending no more)
        log.warning("refused a worker registration from %s: worker id %r is not one being started",
                    _peer(ws), worker_id[:64])
        await ws.close(code=CLOSE_POLICY, reason="unknown worker")
        return
    await ws.accept()
    conn = Conn(ws)
    try:
        header, _ = framing.parse_first(await recv_frame(ws))
        if header["type"] != messages.REGISTER:
            raise framing.ProtocolError("a worker's first message must be 'register'")
        worker = scheduler.register(worker_id, secret, conn, header)
    except (framing.ProtocolError, PermissionError) as e:
        log.warning("refused a worker registration from %s for %s: %s", _peer(ws), worker_id, e)
        await conn.send(messages.failure("unauthorized", str(e)))
        await ws.close(code=CLOSE_POLICY, reason=str(e)[:120])
        return
    except (Disconnected, WebSocketDisconnect):
        return
    await conn.send({"type": messages.REGISTERED, "worker": worker.id})
    try:
        while True:
            header, inline = framing.parse_first(await recv_frame(ws))
            frames = [f async for f in iter_frames(header, ws)]
            await scheduler.worker_event(worker, header, inline, frames)
    except (Disconnected, WebSocketDisconnect):
        pass
    except framing.ProtocolError as e:
        log.warning("worker %s sent a malformed message: %s", worker.id, e)
        await ws.close(code=CLOSE_PROTOCOL, reason=str(e)[:120])
    finally:
        await scheduler.worker_gone(worker)


def _peer(ws: WebSocket) -> str:
    client = ws.client
    return f"{client.host}:{client.port}" if client else "a Unix socket"
