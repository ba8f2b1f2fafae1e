"""The kernel websocket, ``/ws/session/{session_id}`` with ``Authorization: token T``: the welcome,
then a kernel's messages (execute, interrupt, kill, input_reply, lane_lost, release, prewarm,
status), a cell run warm (its frames forwarded to the worker as they arrive) or cold (buffered
while a worker is found or started).

A malformed message closes only this connection (1002, the reason naming the problem); a wrongly
typed one is refused with ``bad_request`` and the connection kept.  A kernel whose connection drops
keeps its session (and its workers) for ``RECONNECT_GRACE`` seconds.

What a client sends is not trusted (issue 24): a cell is its session's (the scheduler keys it by
(session, cell)); a ``keep_warm`` past ``MAX_KEEP_WARM`` is refused; cell inputs are counted as
their frames arrive (frames.py) - bytes past what the header declared close the connection with
``payload_too_large`` (1009) before they are kept or reach a worker; per-user caps (caps.py) refuse
a session or a cell at once; and a kernel that stops reading is dropped after ``--send-timeout``
(model.py's ``Conn``), its connection closed with the reason once it reads again.
"""
from __future__ import annotations

import asyncio
import logging
import math
import os
import time

from starlette.websockets import WebSocket, WebSocketDisconnect

from jupyter_gpu import __version__
from jupyter_gpu._wire import framing, messages, settings, shm
from jupyter_gpu.errors import BadRequest, GpuError

from jupyter_gpu_backend.accounting.budgets import Budgets
from jupyter_gpu_backend.api.auth import WRONG_TOKEN, Auth
from jupyter_gpu_backend.api.frames import (CLOSE_POLICY, CLOSE_PROTOCOL, CLOSE_RESTART, CLOSE_TOO_BIG, Disconnected,
                                            PayloadMismatch, drain, iter_frames, recv_frame)
from jupyter_gpu_backend.config import BackendConfig
from jupyter_gpu_backend.scheduling.capacity import QueueCancelled
from jupyter_gpu_backend.scheduling.jobs import Jobs, JobStore, default_store
from jupyter_gpu_backend.scheduling.lifecycle import ended
from jupyter_gpu_backend.scheduling.model import MAX_KEEP_WARM, Session
from jupyter_gpu_backend.scheduling.scheduler import Conn, Scheduler

log = logging.getLogger("jupyter_gpu_backend")

RECONNECT_GRACE = 30.0  # a kernel's workers outlive a dropped connection this long


async def _close_quietly(ws: WebSocket, code: int, reason: str) -> None:
    """Close ``ws`` with ``reason``: the close frame goes once the peer has read what is before it."""
    try:
        await ws.close(code=code, reason=reason)
    except Exception:  # it went first
        pass


def _store_beside(ledger: str | None) -> str:
    """Spawned calls' results: ``jobs/`` beside a SQLite ledger file, else in Jupyter's data dir."""
    if ledger and "://" not in ledger:
        return os.path.join(os.path.dirname(os.path.abspath(ledger)), "jobs")
    return default_store()


class Kernels:
    def __init__(self, config: BackendConfig, scheduler: Scheduler, auth: Auth):
        self.config = config
        self.scheduler = scheduler
        self.auth = auth
        self.clients = 0
        self.closing = False  # set once an idle embedded backend has decided to exit
        self.last_client_left = time.monotonic()
        self._close_tasks: dict[str, asyncio.TimerHandle] = {}
        self.host_id = shm.host_id()
        self.budgets = Budgets.attach(config, scheduler)  # None without --session/--user-budget
        self.jobs = Jobs(scheduler, JobStore(config.job_dir or _store_beside(config.ledger)), config.job_ttl)
        self.max_keep_warm = max(MAX_KEEP_WARM, config.keep_warm)
        Conn.send_timeout = config.send_timeout  # (one backend a process)
        Session.keep_bytes = config.resume_buffer  # what a resuming kernel may get back (--resume-buffer)

    async def connect(self, ws: WebSocket, session_id: str) -> None:
        user = self.auth.user_of(ws)
        if user is None:
            await ws.close(code=CLOSE_POLICY, reason=WRONG_TOKEN)
            return
        await ws.accept()
        if self.closing:  # accepted, then closed: the kernel retries with a fresh backend
            await ws.close(code=CLOSE_RESTART, reason="this backend is exiting")
            return
        existed = session_id in self.scheduler.sessions
        resume = _resume_after(ws)  # a kernel whose connection dropped: the last event it took
        try:
            session = self.scheduler.session(session_id, user)
        except PermissionError as e:  # another user's session id: nothing of it is reachable
            await ws.close(code=CLOSE_POLICY, reason=str(e)[:120])
            return
        except GpuError as e:  # --max-sessions-per-user
            await ws.close(code=CLOSE_POLICY, reason=str(e)[:120])
            return
        pending_close = self._close_tasks.pop(session_id, None)
        if pending_close is not None:
            pending_close.cancel()
        conn = Conn(ws)
        conn.on_timeout = lambda: self._drop(session, conn)
        if resume is None:
            session.conn = conn
        self.clients += 1
        try:
            await conn.send(self._welcome(session_id))
            if resume is not None:
                await self._resume(session, conn, resume, existed)
            while True:
                frame = await recv_frame(ws)
                if conn.timed_out:  # dropped: what it sends now is not served
                    break
                try:
                    await self._serve(session, frame, ws)
                except PayloadMismatch as e:  # bytes past what was declared: nothing more is read
                    limit = self.config.max_payload
                    await conn.send(messages.failure(
                        "payload_too_large", f"{e}; this backend accepts at most {limit} bytes of cell inputs "
                        "(--max-payload), counted as they arrive: the connection is closed", cell=e.cell))
                    await ws.close(code=CLOSE_TOO_BIG, reason=f"cell inputs past their declared size (limit {limit} bytes)")
                    return
                except framing.ProtocolError as e:
                    await conn.send(messages.failure("protocol", f"malformed message: {e}"))
                    await ws.close(code=CLOSE_PROTOCOL, reason=str(e)[:120])
                    return
            if conn.closing is not None:
                await conn.closing  # dropped (it stopped reading): closed once it reads again, saying why
        except (Disconnected, WebSocketDisconnect):
            pass
        finally:
            self.clients -= 1
            if session.conn is conn:
                log.info("session %s: its kernel's connection closed; the session waits %g s for it", session_id,
                         RECONNECT_GRACE)
                session.conn = None
                self._close_later(session_id)
            if self.clients == 0:
                self.last_client_left = time.monotonic()

    async def _resume(self, session, conn: Conn, after: int, existed: bool) -> None:
        """Send the reconnected kernel what followed event ``after`` (what came meanwhile too, in
        order), then make ``conn`` the session's.  A gap is said as a failure first."""
        if not existed and after > 0:
            await conn.send(messages.failure(
                "connection_lost", f"this backend does not have session {session.id} (it restarted, or the session "
                f"ended {RECONNECT_GRACE:g} s after its kernel left): what followed its event {after} is lost"))
        elif session.let_go > after:
            await conn.send(messages.failure(
                "connection_lost", f"events {after + 1}..{session.let_go} of this session are lost: the backend keeps "
                f"at most {session.keep_bytes} bytes a kernel has not acknowledged (--resume-buffer)"))
        session.acknowledged(after)
        sent = after
        while True:  # (an event emitted while this awaits is kept, and sent in the next round)
            todo = [e for e in session.kept if e[0] > sent]
            if not todo:
                break
            for seq, data, _ in todo:
                if not await conn.send_frames(data):
                    return  # broken again: the kernel resumes again
                sent = seq
        session.conn = conn  # (no await since the last look: nothing emitted in between is missed)
        pending_close = self._close_tasks.pop(session.id, None)  # (the old connection's end may have set one)
        if pending_close is not None:
            pending_close.cancel()

    async def _serve(self, session, frame, ws: WebSocket) -> None:
        """One message served; one well framed but wrongly typed is refused (``bad_request``), its
        frames skipped, the connection kept - unless skipping them finds they do not add up to what
        it declared (``PayloadMismatch``, raised here like any ``ProtocolError``: the caller closes)."""
        try:
            header, inline = framing.parse_first(frame)
            await self.on_message(session, header, inline, ws)
        except framing.InvalidMessage as e:
            await drain(e.header, ws)
            cell = e.header.get("cell")
            await self._fail(session, cell if isinstance(cell, str) else None, "bad_request", f"malformed message: {e}")

    def _close_later(self, session_id: str) -> None:
        """The session's kernel is gone: its session (and workers) go after RECONNECT_GRACE."""
        loop = asyncio.get_running_loop()
        self._close_tasks[session_id] = loop.call_later(
            RECONNECT_GRACE, lambda: asyncio.ensure_future(self._close_session(session_id))
        )

    def _drop(self, session, conn: Conn) -> None:
        """``conn``'s kernel has not read for ``--send-timeout``: it gets nothing more (its cells' events
        are lost to it), its session is on the reconnect grace, and the close waits until it reads."""
        if session.conn is conn:
            session.conn = None
            self._close_later(session.id)
        reason = f"the kernel did not read its events for {Conn.send_timeout:g} s (--send-timeout): dropped"
        conn.closing = asyncio.ensure_future(_close_quietly(conn.ws, CLOSE_POLICY, reason))

    def _welcome(self, session_id: str) -> dict:
        runtime = self.scheduler.runtime
        return {
            "type": messages.WELCOME,
            "version": __version__,
            "protocol": framing.PROTOCOL_VERSION,
            "session": session_id,
            "host_id": self.host_id if runtime.shares_host else None,
            "runtime": runtime.name,
            "offers": runtime.offers(),
            "default_gpu": runtime.default_gpu(),
            # the most devices a worker may get per type ("A100:2"); absent: one
            "devices": runtime.max_devices() or {},
            "images": sorted(self.scheduler.images),  # what `%%gpu --image NAME` may name
            # "sync": its workers never see the kernel's directory (it is synced from the first cell)
            "files": settings.FILES.get(),
        }

    async def _close_session(self, session_id: str) -> None:
        self._close_tasks.pop(session_id, None)
        session = self.scheduler.sessions.get(session_id)
        if session is not None and session.conn is None:
            await self.scheduler.close_session(session)

    async def on_message(self, session, header: dict, inline, ws: WebSocket) -> None:
        kind = header["type"]
        if kind == messages.EXECUTE:
            await self.on_execute(session, header, inline, ws)
        elif kind == messages.INTERRUPT:
            if not self.jobs.stop_waiting(session, header.get("cell", "")):  # (a FunctionCall.get's wait)
                await self.scheduler.interrupt(session, header.get("cell", ""))
        elif kind == messages.KILL:
            await self.scheduler.kill(session, header.get("cell", ""), header.get("gpu"), header.get("image"))
        elif kind == messages.INPUT_REPLY:
            await self.scheduler.input_reply(session, header)
        elif kind == messages.LANE_LOST:
            asyncio.ensure_future(self._lane_lost(session, header))  # it waits for the worker's exit
        elif kind == messages.RELEASE:
            n = await self.scheduler.release(session)
            await session.emit({"type": messages.STATUS_REPLY, "released": n, **self.scheduler.status(session)})
        elif kind == messages.PREWARM:
            asyncio.ensure_future(self._prewarm(session, header))  # a cold start must not block the loop
        elif kind == messages.STATUS:
            await self.scheduler.lane_cells.settle(session)
            await session.emit({"type": messages.STATUS_REPLY, **self.scheduler.status(session)})
        elif kind == messages.ACK:
            session.acknowledged(header.get("upto", 0))
        elif kind in (messages.JOB_GET, messages.JOB_CANCEL, messages.JOB_INFO, messages.JOB_LIST):
            asyncio.ensure_future(self._job_request(session, kind, header))  # it may wait for the job
        else:
            await session.emit(messages.failure("bad_request", f"unknown message type {kind!r}"))

    async def _job_request(self, session, kind: str, header: dict) -> None:
        jid = str(header.get("job", ""))
        if kind == messages.JOB_GET:
            await self.jobs.get(session, str(header.get("cell", "")), jid, header.get("timeout"), header.get("after", 0))
            return
        if kind == messages.JOB_LIST:
            jobs = await self.jobs.listing(session.user, str(header.get("notebook", "")))
            await session.emit({"type": messages.JOBS_REPLY, "jobs": jobs})
            return
        info = await (self.jobs.cancel(session, jid) if kind == messages.JOB_CANCEL else self.jobs.lookup(session.user, jid))
        if info is None:
            await session.emit(messages.failure("no_such_job", f"no spawned call {jid!r} of yours on this backend"))
        else:
            await session.emit(info)

    async def on_execute(self, session, header: dict, inline, ws: WebSocket) -> None:
        # what the backend adds is the backend's to say: a kernel's `uid` made the worker become that
        # user (a runtime without a sandbox adds none), its `follow` put a directory before site-packages
        header.pop("uid", None)
        header.pop("follow", None)
        if "ack" in header:  # the kernel has the session's events up to there
            session.acknowledged(header["ack"])
        size = framing.payload_size(header)
        cell = header.get("cell")
        if not isinstance(cell, str) or not isinstance(header.get("code"), str):
            await drain(header, ws)
            await self._fail(session, cell, "bad_request", "execute needs a string 'cell' and 'code'")
            return
        if size > self.config.max_payload:
            await drain(header, ws)
            await self._fail(
                session, cell, "payload_too_large",
                f"cell inputs are {size} bytes; this backend accepts at most {self.config.max_payload}",
            )
            return
        try:
            self._check_keep_warm(header)
            warning = self.budgets.check(session.id, session.user) if self.budgets else None
            run = self.scheduler.begin(session, header)
        except GpuError as e:
            await drain(header, ws)
            await self._fail(session, cell, e.code, str(e))
            return
        if warning:
            await session.emit({"type": messages.STREAM, "cell": cell, "name": "stderr", "text": warning})
        if header.get("job") is not None:  # f.spawn: the backend's from here on
            if not await self._wait_for_worker(run, header, ws):  # (its id is the backend's: no claim)
                return
            try:
                frames = [f async for f in iter_frames(header, ws)]
            except BaseException:
                self.scheduler.caps.done_waiting(session.user)
                raise
            job = self.jobs.start(session, run, header)
            # its row is committed before its id is given: a backend that dies from here on leaves it `lost`
            await asyncio.to_thread(self.scheduler.ledger.flush)
            await session.emit(job.reply(cell=cell))
            asyncio.ensure_future(self._cold_execute(run, header, inline, frames))
            return
        if self.scheduler.stale(session, run, header):
            await drain(header, ws)
            await session.emit({"type": messages.RESEND, "cell": cell, "reason": "the worker holding your values is gone"})
            return
        # a cell whose worker must first get the kernel's versions (scheduling/follow.py) waits off this loop
        lease = None if self.scheduler.follow.plan(run, header) else self.scheduler.warm_lease(session, run.key)
        if lease is not None:
            try:
                self.scheduler.claim(run)  # (no await from warm_lease to dispatch marking the worker busy)
            except GpuError as e:
                await drain(header, ws)
                await self._fail(session, cell, e.code, str(e))
                return
            # warm path: forward frames as they arrive, no buffering
            frames = iter_frames(header, ws)
            self.scheduler.lifecycle.started(run)
            try:
                await self.scheduler.dispatch(run, lease, header, inline, more=frames)
            except (Disconnected, WebSocketDisconnect, framing.ProtocolError):
                # the worker holds half a message: it cannot be trusted with the next one
                lease.worker.killed_reason = "the kernel disconnected in the middle of sending the cell"
                if lease.worker.conn is not None:
                    lease.worker.conn.open = False  # no cell goes to it meanwhile (worker_gone comes once it is dead)
                self.scheduler.runtime.kill(lease.worker.handle)
                raise
            async for _ in frames:  # what a failed send left unread
                pass
            return
        try:
            self.scheduler.claim(run)
        except GpuError as e:
            await drain(header, ws)
            await self._fail(session, cell, e.code, str(e))
            return
        if not await self._wait_for_worker(run, header, ws):
            ended(run)
            return
        try:  # its inputs are kept until a worker is there: --max-queued-per-user bounds them
            frames = [f async for f in iter_frames(header, ws)]
        except BaseException:
            ended(run)
            self.scheduler.caps.done_waiting(session.user)
            raise
        asyncio.ensure_future(self._cold_execute(run, header, inline, frames))

    async def _wait_for_worker(self, run, header: dict, ws: WebSocket) -> bool:
        """Count the cell among its user's waiting for a worker (``_cold_execute`` uncounts it); False:
        refused (--max-queued-per-user), the failure sent and its frames skipped."""
        try:
            self.scheduler.caps.wait(run.session.user)
            return True
        except GpuError as e:
            await drain(header, ws)
            await self._fail(run.session, run.id, e.code, str(e))
            return False

    def _check_keep_warm(self, header: dict) -> None:
        """A client's keep-warm: a finite number of seconds, at most ``max_keep_warm`` (a worker held
        for ever would escape scale to zero and the per-user caps)."""
        kw = header.get("keep_warm")
        if kw is None:
            return
        if not isinstance(kw, (int, float)) or isinstance(kw, bool) or not math.isfinite(kw) \
                or not 0 <= kw <= self.max_keep_warm:
            raise BadRequest(f"keep_warm must be a number of seconds from 0 to {self.max_keep_warm:g}, not {kw!r}")

    async def _cold_execute(self, run, header, inline, frames) -> None:
        lifecycle = self.scheduler.lifecycle
        lifecycle.queued(run)
        self.scheduler.starting[run.row] = run  # an interrupt meanwhile is kept for after the start
        try:
            await self.scheduler.build(run, header)  # its jupyter_gpu.Image, first (a failure leases nothing)
            lease = await self.scheduler.lease_for(run, header.get("keep_warm"))
            if not run.interrupts:
                lifecycle.running(run)
                # the live status line goes from "queued"/"cold start" to "running" (a warm cell
                # shows neither); still `starting` meanwhile, so a stop now is kept too
                await run.session.emit({"type": messages.PHASE, "cell": run.id, "phase": "running", "gpu": run.gpu})
        except GpuError as e:
            lifecycle.failed(run)
            await self._fail(run.session, run.id, e.code, str(e))
            return
        except QueueCancelled:
            run.queue = time.monotonic() - run.t_submit  # it waited in line until now
            await self._interrupted_before_start(run, f"in the queue for {run.gpu}")
            return
        finally:
            self.scheduler.starting.pop(run.row, None)
            self.scheduler.caps.done_waiting(run.session.user)
        if run.interrupts:  # the stop button during the cold start: the worker stays, warm and leased
            await self._interrupted_before_start(run, f"while a worker for {run.gpu} was starting; it is warm now")
            return
        busy = lease.worker.cell
        if busy is not None:  # the session sent a cell while its worker runs another: not run over it
            lifecycle.failed(run)
            await self._fail(run.session, run.id, "bad_request", f"this session's worker for {run.gpu} is running "
                             f"cell {busy.id!r}; a session runs one cell at a time on a worker")
            return
        # no await between those checks and dispatch marking the worker busy with this cell: a stop
        # from here on finds the cell there (Scheduler.interrupt) and goes to the worker after it
        await self.scheduler.dispatch(run, lease, header, inline, frames)

    async def _interrupted_before_start(self, run, where: str) -> None:
        waited = time.monotonic() - run.t_submit
        timings = {"queue": run.queue, "cold_start": run.cold_start}
        self.scheduler.lifecycle.interrupted(run, timings)
        await run.session.emit({"type": messages.ERROR, "cell": run.id, "ename": "KeyboardInterrupt",
                                "evalue": f"interrupted after {waited:.1f} s {where}", "traceback": []})
        await run.session.emit(messages.done(run.id, "interrupted", timings, gpu=run.gpu, cold=run.cold))

    async def _lane_lost(self, session, header: dict) -> None:
        await session.emit(await self.scheduler.lane_cells.lost(session, header))

    async def _prewarm(self, session, header: dict) -> None:
        try:
            self._check_keep_warm(header)
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


def _resume_after(ws: WebSocket) -> int | None:
    """``X-Jupyter-Gpu-Resume``: the last event a reconnecting kernel took (None: a new connection)."""
    raw = ws.headers.get("x-jupyter-gpu-resume")
    if raw is None:
        return None
    try:
        return max(0, int(raw))
    except ValueError:
        return None
