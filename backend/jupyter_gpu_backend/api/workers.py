"""The worker websocket, ``/ws/worker``: a worker started by a runtime dials out to it, with the
worker id (``X-Worker-Id``) and the one-time secret (``X-Worker-Secret``) the runtime gave it.

An unknown worker id is refused before the websocket is accepted (1008); the first message must
be ``register`` with the right secret, else ``failure`` ``unauthorized`` and 1008.  Both are logged
(a forged registration, or a replayed one: a registered worker's id is pending no more).  Then every
message of the worker goes to the scheduler, and its end (a close, or 1002 for a malformed message)
is the scheduler's ``worker_gone``.

A worker whose connection drops without a close while its process lives on dials again with the
key ``registered`` gave it (``X-Worker-Resume``) within ``RESUME_GRACE`` seconds: its cell carries
on.  Every message of a worker carries its ``wseq``; the backend says the last it took, the worker
sends what followed again, and one taken twice is skipped.  A worker that exits is gone at once.

A worker whose process is there but answers nothing (stopped, deadlocked) is found by its heartbeat:
asked for one every quarter of ``Scheduler.heartbeat`` seconds (``registered``), sent by its reader
thread whatever its cell does; a worker that sent nothing for ``heartbeat`` seconds, while the
backend was not itself sending to it (that send has its own bound), is killed and its cell failed
saying so (``Scheduler.hung``).  Its last message's time is one attribute write a message.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time

from starlette.websockets import WebSocket, WebSocketDisconnect

from jupyter_gpu._wire import framing, messages

from jupyter_gpu_backend.api.frames import CLOSE_POLICY, CLOSE_PROTOCOL, Disconnected, drain, iter_frames, recv_frame
from jupyter_gpu_backend.scheduling.scheduler import Conn, Scheduler

log = logging.getLogger("jupyter_gpu_backend")
RESUME_GRACE = 10.0  # seconds a live worker whose connection dropped has to resume it


async def serve_worker(scheduler: Scheduler, ws: WebSocket) -> None:
    worker_id = ws.headers.get("x-worker-id", "")
    secret = ws.headers.get("x-worker-secret", "")
    key = ws.headers.get("x-worker-resume")
    if key is not None:
        await _resume(scheduler, ws, worker_id, key)
        return
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
        worker.wseq_in = header.get("wseq") or 0  # (its messages are numbered from its registration on)
    except (framing.ProtocolError, PermissionError) as e:
        log.warning("refused a worker registration from %s for %s: %s", _peer(ws), worker_id, e)
        await conn.send(messages.failure("unauthorized", str(e)))
        await ws.close(code=CLOSE_POLICY, reason=str(e)[:120])
        return
    except (Disconnected, WebSocketDisconnect):
        return
    worker.resume_key = secrets.token_urlsafe(24)
    await conn.send(_registered(scheduler, worker, resume=worker.resume_key))
    await _serve(scheduler, worker, conn, ws)


async def _serve(scheduler: Scheduler, worker, conn: Conn, ws: WebSocket) -> None:
    """The worker's messages on ``conn``, to the scheduler; at their end, the worker is gone - unless
    the connection dropped and the worker, alive, resumes it within RESUME_GRACE seconds."""
    bound = scheduler.heartbeat
    worker.heard = time.monotonic()
    watch = asyncio.ensure_future(_watch(scheduler, worker, ws, bound)) if bound else None
    dropped = False
    try:
        while True:
            header, inline = framing.parse_first(await recv_frame(ws))
            if worker.conn is not conn:
                break  # resumed on another connection: what is left here is sent again there
            worker.heard = time.monotonic()
            wseq = header.get("wseq")
            if wseq is not None:
                if wseq <= worker.wseq_in:
                    await drain(header, ws)  # (its payload's frames too)
                    continue  # sent again after a resume, and taken before
                if wseq != worker.wseq_in + 1:  # one that jumped ahead would have every later one skipped
                    raise framing.ProtocolError(f"message number {wseq} after {worker.wseq_in}: a worker numbers "
                                                "its messages one by one")
                worker.wseq_in = wseq
            if header["type"] == messages.HEARTBEAT:
                continue
            frames = [f async for f in iter_frames(header, ws)]
            await scheduler.worker_event(worker, header, inline, frames)
    except (Disconnected, WebSocketDisconnect):
        dropped = True
    except framing.ProtocolError as e:
        log.warning("worker %s sent a malformed message: %s", worker.id, e)
        # its cell's error says why, as a hung worker's does (its exit cause); a worker that sent one is
        # not trusted with another cell (a user's code may have sent it on the worker's connection)
        worker.hung = f"it sent a malformed message ({str(e)[:200]}), so it was closed and killed"
        if worker.handle is not None:
            scheduler.runtime.kill(worker.handle)
        await ws.close(code=CLOSE_PROTOCOL, reason=str(e)[:120])
    finally:
        if watch is not None:
            watch.cancel()
        if worker.conn is conn and not (dropped and await scheduler.losses.worker_resumes(worker, RESUME_GRACE)):
            await scheduler.losses.worker_gone(worker)


async def _resume(scheduler: Scheduler, ws: WebSocket, worker_id: str, key: str) -> None:
    """A live worker whose connection dropped dials again with its resume key: this connection is
    its own from now on; ``registered`` tells it the last of its messages taken (``got``), and it
    sends what followed again."""
    worker = scheduler.workers.get(worker_id)
    if worker is None or not worker.resume_key or not secrets.compare_digest(key, worker.resume_key):
        log.warning("refused a worker's resume from %s: %r is no live worker of this backend, or the key is wrong",
                    _peer(ws), worker_id[:64])
        await ws.close(code=CLOSE_POLICY, reason="unknown worker")
        return
    await ws.accept()
    conn = Conn(ws)
    old, worker.conn = worker.conn, conn
    if old is not None:
        old.open = False
    if worker.resumed is not None and not worker.resumed.done():
        worker.resumed.set_result(True)
    log.info("worker %s resumed its connection after message %d", worker.id, worker.wseq_in)
    await conn.send(_registered(scheduler, worker, got=worker.wseq_in))
    if worker.cell is not None and worker.cell.id not in ws.headers.get("x-worker-cells", "").split(","):
        await scheduler.losses.unsent(worker)  # the cell went into the dropped connection: it never came
    await _serve(scheduler, worker, conn, ws)


async def _watch(scheduler: Scheduler, worker, ws: WebSocket, bound: float) -> None:
    """Kill a worker that sent nothing for ``bound`` seconds; its connection's end fails its cell."""
    while True:
        await asyncio.sleep(bound / 4)
        conn = worker.conn
        if conn is not None and conn._sender is not None:
            continue  # the backend waits on a send to it: --send-timeout bounds that
        # a worker reading a long request (a kernel's large inputs, relayed as they arrive) sends no
        # heartbeat meanwhile: the backend's sends to it count as a sign of life too
        if time.monotonic() - max(worker.heard, conn._since if conn is not None else 0.0) > bound:
            scheduler.losses.hung(worker, bound)
            try:  # a killed process's connection closes by itself; a runtime's kill may take longer
                await asyncio.wait_for(worker.gone.wait(), 5.0)
            except asyncio.TimeoutError:
                await ws.close(code=1011, reason="no heartbeat")
            return


def _registered(scheduler: Scheduler, worker, **fields) -> dict:
    """``registered`` for ``worker`` (a new one's resume key, or a resumed one's ``got``), with the
    heartbeat the backend asks of it."""
    bound = scheduler.heartbeat
    return {"type": messages.REGISTERED, "worker": worker.id, **fields, **({"heartbeat": bound / 4} if bound else {})}


def _peer(ws: WebSocket) -> str:
    client = ws.client
    return f"{client.host}:{client.port}" if client else "a Unix socket"
