"""Sessions, workers and leases: who runs which cell, cold starts, keep-warm and scale to zero.

One session = one notebook kernel.  A session leases at most one worker per (GPU type, worker
image) (``jupyter_gpu/_wire/pools.py``: ``Session.leases`` is keyed by ``pool_key``); the lease
stays warm for ``keep_warm`` seconds after its last cell, then the worker is stopped (scale to
zero; a lane worker is asked to retire).  A worker serves one session for its life; a dedicated
one is replaced by a fresh process when its session lets it go.  What is tracked (sessions,
workers, leases, cells) is in ``model.py``; a cell's ledger rows are written by ``lifecycle.py``, the
reports of lane cells handled by ``lane_cells.py``, workers that end unasked by ``losses.py``.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time

from jupyter_gpu._wire import devices, framing, messages
from jupyter_gpu.errors import BadRequest, NoSuchImage, WorkerStartFailed
from jupyter_gpu._wire.pools import DEFAULT_IMAGE, pool_key, split_key

from jupyter_gpu_backend.prestart import new_identity
from jupyter_gpu_backend.scheduling.autoscale import Autoscaler
from jupyter_gpu_backend.scheduling.builds import Builds
from jupyter_gpu_backend.scheduling.capacity import Capacity
from jupyter_gpu_backend.scheduling.caps import UserCaps
from jupyter_gpu_backend.scheduling.dedicated import DEDICATED, SERVERLESS, DedicatedPool
from jupyter_gpu_backend.config import OWNER
from jupyter_gpu_backend.runtimes.images import default_images
from jupyter_gpu_backend.accounting.ledger import NullLedger
from jupyter_gpu_backend.runtimes.base import Runtime
from jupyter_gpu_backend.scheduling.lifecycle import CellLifecycle
from jupyter_gpu_backend.scheduling.follow import Follow
from jupyter_gpu_backend.scheduling.lane_cells import LaneCells
from jupyter_gpu_backend.scheduling.losses import Losses
from jupyter_gpu_backend.scheduling.model import CellRun, Conn, Lease, Session, Worker, row_id
from jupyter_gpu_backend.scheduling.spares import SparePool

log = logging.getLogger("jupyter_gpu_backend")
# a cold start still waiting after WAIT_NOTE_AFTER (a Ray actor boots in ~5 s here) says what the
# runtime waits for, then again every WAIT_NOTE_EVERY when that changes
WAIT_NOTE_AFTER, WAIT_NOTE_EVERY = 8.0, 2.0
RETIRE_RETRY = 5.0  # a worker that declined to retire (a lane cell was under way) is asked again
# a stopped worker's last reports (its lane cells' `metered`) arrive before its connection closes:
# stop_worker waits this long for that, so a release answered means those cells are in the ledger
LAST_REPORTS_WAIT = 2.0


class Scheduler:
    def __init__(self, runtime: Runtime, keep_warm: float, start_timeout: float = 120.0, max_workers: int | None = None,
                 ledger=None, min_warm: int = 0, lanes: bool = True, dedicated: dict | None = None,
                 scale_up_queue: int | None = None, target_utilisation: float | None = None,
                 images: dict | None = None, caps: UserCaps | None = None):
        self.runtime = runtime
        self.caps = caps or UserCaps()  # per-user caps (caps.py): workers, sessions, cells waiting
        self.images = images or default_images()  # name -> images.WorkerImage; spares and dedicated: default only
        self.ledger = ledger if ledger is not None else NullLedger()
        self.lifecycle = CellLifecycle(lambda: self.ledger)  # a cell's ledger rows (budgets may wrap the ledger later)
        self.lane_cells = LaneCells(self)  # the cells that go straight from a kernel to its worker
        self.losses = Losses(self)  # workers that end unasked: hung, dropped, gone
        self.capacity = Capacity(max_workers)
        self.spares = SparePool(min_warm, self.capacity, self.start_worker, runtime.offers)
        self.dedicated = DedicatedPool(dedicated or {}, self.start_worker, lambda: self.ledger)
        self.autoscale = Autoscaler(self, scale_up_queue, target_utilisation)  # spares beyond min_warm
        if self.autoscale.active:
            self.spares.target = self.autoscale.target
        self.keep_warm = keep_warm
        self.start_timeout = start_timeout
        self.sessions: dict[str, Session] = {}
        self.workers: dict[str, Worker] = {}
        self.pending: dict[str, tuple[str, Worker]] = {}  # worker id -> (one-time secret, worker)
        self.gone: dict[str, Worker] = {}  # recently gone workers (bounded), for lane_lost
        self.starting: dict[str, CellRun] = {}  # row -> cell waiting for a cold start (api/kernels.py: _cold_execute)
        self.lanes = lanes  # hand kernels on this host the direct lane of their warm worker
        self.heartbeat = 60.0  # a worker silent this long is hung (--worker-heartbeat; 0: never; api/workers.py)
        self.builds = Builds(self)  # jupyter_gpu.Image specs, built before their first worker
        self.follow = Follow(runtime, enabled=runtime.follows_kernel)  # the kernel's versions, for default workers

    # -- sessions ------------------------------------------------------------------------------
    def session(self, session_id: str, user: str) -> Session:
        s = self.sessions.get(session_id)
        if s is None:
            self.caps.check_session(self.sessions.values(), user)  # --max-sessions-per-user
            s = self.sessions[session_id] = Session(session_id, user)
            self.ledger.session_opened(session_id, user)
        elif s.user != user:
            raise PermissionError(f"session {session_id} belongs to another user")
        return s

    def warm_lease(self, session: Session, key: str) -> Lease | None:
        lease = _live(session.leases.get(key))
        return lease if lease is not None and lease.worker.cell is None else None

    # -- running a cell ------------------------------------------------------------------------
    def choose(self, spec: str) -> str:
        """The pool key for ``spec``: a type, or "A100:2" where the runtime gives a worker several."""
        most = self.runtime.max_devices()  # None: one device per worker
        return devices.choose(spec, self.runtime.offers(), 1 if most is None else most)

    def begin(self, session: Session, header: dict) -> CellRun:
        self.runtime.cells_seen()
        gpu = self.choose(header.get("gpu") or self.runtime.default_gpu())
        # the kernel's directory goes to a cold start's runtime (docker: bind-mounted) only for the
        # backend's own user: a path another user's kernel names is not trusted to be theirs
        cwd = header.get("cwd") if session.user == OWNER else None
        return CellRun(header["cell"], session, gpu, time.monotonic(), image=self.image_of(header, session.user), cwd=cwd,
                       function=messages.function_label(header.get("call")))

    def claim(self, run: CellRun) -> None:
        """The run's id is its session's until it ends (lifecycle.py): a second cell with the id
        while it runs is refused (it would share its ledger row, its budget entry and its stop)."""
        cells = run.session.cells
        if run.id in cells:
            raise BadRequest(f"cell id {run.id!r} is in use by a cell of this session that has not ended; "
                             "a cell id names one cell at a time")
        cells[run.id] = run

    def image_of(self, header: dict, user: str = OWNER) -> str:
        """The worker image a request names (default when it names none); NoSuchImage lists the others.
        A ``jupyter_gpu.Image``'s (``image_spec``) is known by its hash: built before its first worker
        starts (``build``), refused now if this runtime cannot build it."""
        image = header.get("image") or DEFAULT_IMAGE
        if header.get("image_spec") is not None:  # a jupyter_gpu.Image: built before its first worker (builds.py)
            return self.builds.accept(header["image_spec"], image, user)
        if image not in self.images:
            raise NoSuchImage(f"no worker image {image!r} on this backend; its images: {', '.join(sorted(self.images))}")
        return image

    async def build(self, run: CellRun, header: dict | None = None) -> None:
        """Build the run's ``jupyter_gpu.Image`` if this backend has not (builds.py), and the
        kernel's versions its default worker lacks (follow.py)."""
        await self.builds.build(run)
        if header is not None:
            await self.follow.build(run, header)

    def stale(self, session: Session, run: CellRun, header: dict) -> bool:
        """True when the kernel assumed values on a worker this session no longer has."""
        expect = header.get("expect_worker")
        lease = session.leases.get(run.key)
        return bool(expect) and (lease is None or lease.worker.id != expect)

    async def lease_for(self, run: CellRun, keep_warm: float | None) -> Lease:
        session = run.session
        lease = _live(session.leases.get(run.key))
        if lease is not None:
            return lease
        # one start at a time per session and pool: a cell (or prewarm) that comes while the session's
        # worker starts takes that worker, rather than start another whose lease would replace the
        # first's and orphan it - never stopped, holding its --max-workers slot for good (a fuzzed
        # session left all 3 slots so, and the next user's cell waited in line for ever)
        lock = session.starting.setdefault(run.key, asyncio.Lock())
        if lock.locked():
            await session.emit({"type": messages.PHASE, "cell": run.id, "phase": "cold_start", "gpu": run.gpu})
        async with lock:
            return _live(session.leases.get(run.key)) or await self._new_lease(run, keep_warm)

    async def _new_lease(self, run: CellRun, keep_warm: float | None) -> Lease:
        session = run.session
        default = run.image == DEFAULT_IMAGE  # dedicated workers, spares and autoscaling: the default image's

        async def tell_position(n: int) -> None:
            await session.emit({"type": messages.PHASE, "cell": run.id, "phase": "queued", "position": n, "gpu": run.gpu})

        with self.caps.new_worker(self.sessions.values(), session.user):  # --max-workers-per-user
            worker = await self._worker_for(run, default, tell_position)
        old = session.leases.get(run.key)
        if old is not None:  # its worker's connection is down (it is gone, or resuming): said, for the log's reader
            log.info("session %s: worker %s replaces %s, whose connection is down", session.id, worker.id, old.worker.id)
        lease = Lease(session, run.gpu, worker, keep_warm if keep_warm is not None else self.keep_warm, image=run.image)
        worker.session = session
        self.ledger.worker_state(worker.id, "leased", session=session.id, user=session.user)
        session.leases[run.key] = lease
        self.demand_changed(run.key)  # --target-utilisation: one more lease may want a spare
        return lease

    async def _worker_for(self, run: CellRun, default: bool, tell_position) -> Worker:
        """A worker for a cell whose session has none in its pool."""
        # a free dedicated worker first, then a min_warm spare: either way no cold start
        worker = (self.dedicated.take(run.gpu) or self.spares.take(run.gpu)) if default else None
        if worker is None and default and self.spares.starting(run.gpu):
            # a spare on its way (the embedded backend's early worker, or a refill): its start is
            # under way, so it comes sooner than a start of our own, and takes no second core
            run.cold = True
            await run.session.emit({"type": messages.PHASE, "cell": run.id, "phase": "cold_start", "gpu": run.gpu})
            t0 = time.monotonic()
            worker = await self.spares.take_starting(run.gpu, self.start_timeout)
            run.cold_start = time.monotonic() - t0
        if worker is None:
            with self.autoscale.waiting(run.gpu) if default else contextlib.nullcontext():  # --scale-up-queue
                # a max_workers slot (per GPU type and image), or a dedicated worker that comes free
                # while the cell is in line (a named image's pool has none: key "gpu@image")
                run.queue, worker = await self.dedicated.slot_or_worker(run.key, run.row, self.capacity, tell_position)
                if worker is None:
                    run.cold = True
                    await run.session.emit({"type": messages.PHASE, "cell": run.id, "phase": "cold_start",
                                            "gpu": run.gpu})
                    t0 = time.monotonic()
                    try:
                        worker = await self._start_saying_why(run)
                    except BaseException:
                        self.capacity.release(run.key)
                        raise
                    run.cold_start += time.monotonic() - t0
        return worker

    async def _start_saying_why(self, run: CellRun) -> Worker:
        """``start_worker`` for a cold cell.  A start that takes longer than a worker's usual boot
        says, in the cell's status line, what the runtime waits for (a Ray actor no node has room
        for), as soon as it is so and whenever that changes, not only when the start times out."""
        task = asyncio.ensure_future(self.start_worker(run.gpu, image=run.image, cwd=run.cwd))
        said, first = "", min(WAIT_NOTE_AFTER, self.start_timeout / 2)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=first if not said else WAIT_NOTE_EVERY)
                if done:
                    break
                why = self.runtime.short_of(run.gpu)
                if why is None:
                    break  # the runtime cannot say what it waits for: the start is just waited for
                if why != said:
                    said = why
                    await run.session.emit({"type": messages.PHASE, "cell": run.id, "phase": "cold_start",
                                            "gpu": run.gpu, "detail": why})
            return await task
        except BaseException:
            task.cancel()
            raise

    def demand_changed(self, key: str) -> None:
        """Tell the autoscaler a lease came or went, for the default image (spares are its only)."""
        if split_key(key)[1] == DEFAULT_IMAGE:
            self.autoscale.changed(key)

    async def dispatch(self, run: CellRun, lease: Lease, header: dict, inline, frames=(), more=None) -> None:
        if lease.expiry is not None:
            lease.expiry.cancel()
            lease.expiry = None
        lease.idle_since = None
        if header.get("keep_warm") is not None:  # the latest cell's --keep-warm wins
            lease.keep_warm = float(header["keep_warm"])
        worker = lease.worker
        worker.cell = run
        run.worker = worker
        run.t_dispatch = time.monotonic()
        header["session"] = run.session.id
        uid = self.runtime.uid_for(run.session.user)
        if uid is not None:  # the sandbox's user (local runtime under --users): the worker becomes it first
            header["uid"] = uid
        header.pop("seq", None)
        ok = await worker.conn.send_frames([framing.with_header(header, inline), *frames], more)
        if not ok:
            await self.losses.worker_gone(worker)

    async def start_worker(self, gpu: str, pool: str = SERVERLESS, image: str = DEFAULT_IMAGE,
                           cwd: str | None = None) -> Worker:
        """A new worker; ``cwd``: the directory of the cell it is started for (None: a spare or a
        dedicated worker, started for no cell), which the runtime may mount (docker)."""
        # (a worker already on its way, the local runtime's embedded early one: its id and secret)
        worker_id, secret = self.runtime.claim_prestarted(gpu, image) or new_identity()
        loop = asyncio.get_running_loop()
        # a dedicated worker holds no max_workers slot (that caps the serverless overflow)
        worker = Worker(worker_id, gpu, None, loop.create_future(), pool=pool, slot_released=pool == DEDICATED,
                        image=image)
        self.pending[worker_id] = (secret, worker)
        self.ledger.worker_requested(worker_id, gpu, self.runtime.name)
        self.ledger.worker_pool(worker_id, pool)
        self.ledger.worker_image(worker_id, image)
        try:
            try:  # a runtime may wait for room (a Ray actor until a node has its resources free)
                worker.handle = await asyncio.wait_for(self.runtime.start(gpu, worker_id, secret, image, cwd=cwd),
                                                       self.start_timeout)
            except asyncio.TimeoutError:
                self.ledger.worker_state(worker_id, "lost", cause="not started in time")
                why = self.runtime.waiting_for(gpu)
                raise WorkerStartFailed(f"the {self.runtime.name} runtime did not start a worker for "
                                        f"{pool_key(gpu, image)} within {self.start_timeout:.0f} s{why}") from None
            done, _ = await asyncio.wait(
                [worker.registered, worker.handle.exited],
                timeout=self.start_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if worker.registered not in done:
                self.runtime.kill(worker.handle)
                why = "did not register in time" if not done else "exited before registering"
                self.ledger.worker_state(worker_id, "lost", cause=why)
                raise WorkerStartFailed(
                    f"worker for {pool_key(gpu, image)} {why}; its log ends with:\n{self.runtime.log_tail(worker.handle)}"
                )
        finally:
            self.pending.pop(worker_id, None)
        self.workers[worker_id] = worker
        return worker

    def register(self, worker_id: str, secret: str, conn: Conn, info: dict) -> Worker:
        entry = self.pending.get(worker_id)
        if entry is None or not secrets.compare_digest(entry[0], secret):
            raise PermissionError("unknown worker or wrong registration secret")
        worker = entry[1]
        self.pending.pop(worker_id)  # the secret is one-time
        worker.conn = conn
        worker.lane = info.pop("lane", None)  # the secret is not status material
        worker.info = info
        worker.startup_s = info.get("startup_s", 0.0)
        self.ledger.worker_state(worker_id, "idle", device=worker.device, start_method=worker.start_method)
        if not worker.registered.done():
            worker.registered.set_result(worker)
        return worker

    async def worker_event(self, worker: Worker, header: dict, inline, frames) -> None:
        if header["type"] == messages.REPORTED:  # after the reports it owed, on the same connection
            if worker.reported is not None and not worker.reported.done():
                worker.reported.set_result(None)
            return
        if header["type"] in (messages.STARTED, messages.METERED, messages.RETIRED):
            self.lane_cells.report(worker, header)
            return
        run = worker.cell
        if run is None or header.get("cell") != run.id:
            return  # a late event of a cell that already ended (e.g. after a kill)
        if header["type"] == messages.DONE:
            header["timings"] = {
                **header.get("timings", {}),
                "queue": run.queue,
                "cold_start": run.cold_start,
                **({"build": run.build} if run.build else {}),
                "run": time.monotonic() - run.t_dispatch,
                "worker_start": worker.startup_s if run.cold else 0.0,
            }
            messages.placed(header, worker=worker.id, gpu=worker.gpu, device=worker.device, cold=run.cold,
                            pool=worker.pool, image=worker.image)
            if run.cold:
                messages.placed(header, start_method=worker.start_method)
            self.lifecycle.done(run, worker, header.get("status", "ok"), header["timings"])
            worker.cell = None
            if header.get("status") != "resend":
                worker.cells += 1
            lease = run.session.leases.get(run.key)
            if lease is not None:
                messages.placed(header, keep_warm=lease.keep_warm)
                if self.lanes and worker.lane and lease.worker is worker:
                    messages.placed(header, lane=worker.lane)  # this kernel's later warm cells may go direct
            self.idle(lease)
        await run.session.emit(header, inline, frames)

    def idle(self, lease: Lease | None, ago: float = 0.0) -> None:
        """The lease's worker went idle ``ago`` seconds ago: its keep-warm window runs from then."""
        if lease is None:
            return
        if lease.expiry is not None:
            lease.expiry.cancel()
        lease.idle_since = time.monotonic() - ago
        loop = asyncio.get_running_loop()
        lease.expiry = loop.call_later(
            max(0.0, lease.keep_warm - ago), lambda: asyncio.ensure_future(self.expire(lease))
        )

    async def expire(self, lease: Lease) -> None:
        busy = lease.worker.cell is not None or lease.worker.lane_cell is not None
        if not busy and lease.session.leases.get(lease.key) is lease:
            w = lease.worker
            if w.lane and w.conn is not None and w.conn.open:
                # a lane cell may be under way without our knowing: the worker decides (it exits
                # if it ran nothing since; otherwise that cell's `metered` restarts the window)
                log.info("keep-warm of %s expired: asking %s to retire", lease.session.id, w.id)
                await w.conn.send({"type": messages.RETIRE, "cells": w.cells})
                lease.expiry = asyncio.get_running_loop().call_later(
                    RETIRE_RETRY, lambda: asyncio.ensure_future(self.expire(lease)))
                return
            log.info("keep-warm of %s expired: stopping %s", lease.session.id, w.id)
            await self.stop_lease(lease)

    async def stop_lease(self, lease: Lease) -> None:
        if lease.expiry is not None:
            lease.expiry.cancel()
        lease.session.leases.pop(lease.key, None)
        await self.stop_worker(lease.worker)
        self.demand_changed(lease.key)  # one lease fewer: extra spares go after the scale-down delay

    def release_slot(self, worker: Worker) -> None:
        if not worker.slot_released:  # stop_worker and worker_gone both see the same worker
            worker.slot_released = True
            self.capacity.release(worker.key)

    async def stop_worker(self, worker: Worker) -> None:
        self.workers.pop(worker.id, None)
        self.release_slot(worker)
        self.dedicated.recycle(worker)  # a dedicated worker is replaced by a fresh process
        worker.stopping = True
        self.ledger.worker_state(worker.id, "stopping")
        if worker.conn is not None:
            await worker.conn.send({"type": messages.SHUTDOWN})
        if worker.handle is not None:
            await self.runtime.stop(worker.handle)
        if worker.conn is not None:
            try:
                await asyncio.wait_for(worker.gone.wait(), LAST_REPORTS_WAIT)
            except asyncio.TimeoutError:
                log.warning("worker %s stopped but its connection stayed open %.0f s", worker.id, LAST_REPORTS_WAIT)
        self.ledger.worker_state(worker.id, "stopped")

    # -- control requests ----------------------------------------------------------------------
    def _running(self, session: Session, cell: str) -> Worker | None:
        for lease in session.leases.values():
            if lease.worker.cell is not None and lease.worker.cell.id == cell:
                return lease.worker
        return None

    async def interrupt(self, session: Session, cell: str) -> None:
        row = row_id(session.id, cell)  # only this session's cell: the id is the kernel's choice
        if self.capacity.cancel(row):
            return  # it was still queued: it leaves the line (see api/kernels.py: _cold_execute)
        starting = self.starting.get(row)
        if starting is not None and starting.session is session:
            starting.interrupts += 1  # its worker is starting: the cell will not be dispatched
            return
        worker = self._running(session, cell)
        if worker is not None and worker.conn is not None:
            worker.cell.interrupts += 1
            await worker.conn.send({"type": messages.INTERRUPT, "cell": cell})

    async def input_reply(self, session: Session, header: dict) -> None:
        """The user's answer to the ``input()`` of this session's running cell, for its worker."""
        cell = str(header.get("cell", ""))
        worker = self._running(session, cell)
        if worker is None or worker.conn is None:
            return  # the cell ended (an interrupt) while the user was asked
        err = header.get("error")
        if isinstance(err, dict):  # only what the worker reads: nothing else of the kernel's passes
            answer = {"error": {"ename": str(err.get("ename", "")), "evalue": str(err.get("evalue", ""))}}
        else:
            answer = {"value": str(header.get("value", ""))}
        await worker.conn.send({"type": messages.INPUT_REPLY, "cell": cell, **answer})

    async def kill(self, session: Session, cell: str, gpu: str | None = None, image: str | None = None) -> None:
        worker = self._running(session, cell)
        lease = session.leases.get(pool_key(gpu, image)) if gpu else None
        if worker is None and lease is not None:  # a lane cell: we do not see it run
            worker = lease.worker
        if worker is not None and worker.handle is not None:
            worker.killed_reason = f"worker {worker.id} on {worker.device} was killed after a second interrupt"
            self.runtime.kill(worker.handle)

    async def prewarm(self, session: Session, gpu: str, keep_warm: float | None, image: str | None = None) -> dict:
        """Lease a worker for ``gpu`` (of ``image``) now (cold-starting it if needed) and leave it idle."""
        run = CellRun("prewarm", session, self.choose(gpu), time.monotonic(), image=self.image_of({"image": image}))
        lease = await self.lease_for(run, keep_warm)
        if lease.worker.cell is None and lease.expiry is None:
            self.idle(lease)  # the keep-warm window runs from now
        return {"gpu": run.gpu, "image": run.image, "worker": lease.worker.id, "device": lease.worker.device,
                "cold_start": run.cold_start, "started": run.cold}

    async def release(self, session: Session) -> int:
        leases = list(session.leases.values())
        for lease in leases:
            await self.stop_lease(lease)
        return len(leases)

    def status(self, session: Session) -> dict:
        leases = []
        for lease in session.leases.values():
            w = lease.worker
            leases.append(
                {
                    "gpu": lease.gpu,
                    "device": w.device,
                    "worker": w.id,
                    "state": "busy" if w.cell is not None or w.lane_cell else "idle",
                    "keep_warm": lease.keep_warm,
                    "keep_warm_left": lease.keep_warm_left(),
                    "pool": w.pool,
                    "image": lease.image,
                }
            )
        return {"leases": leases, "offers": self.runtime.offers(), "runtime": self.runtime.name,
                "images": sorted(self.images),
                "warm_pool": self.spares.sizes(), "dedicated": self.dedicated.status(),
                "autoscale": self.autoscale.status()}

    async def close_session(self, session: Session) -> None:
        """The kernel is gone for good: its workers go too (their namespaces are unreachable)."""
        await self.release(session)
        self.sessions.pop(session.id, None)
        self.ledger.session_closed(session.id)

    def stopping(self) -> None:
        """The backend stops: workers killed or disconnected from here on are not replaced."""
        self.dedicated.closing = self.spares.closing = True

    async def shutdown(self) -> None:
        self.stopping()
        for session in list(self.sessions.values()):
            for lease in list(session.leases.values()):
                if lease.expiry is not None:
                    lease.expiry.cancel()
        await self.runtime.shutdown()


def _live(lease: Lease | None) -> Lease | None:
    """``lease`` if its worker is connected (None: no lease, or its worker's connection is down)."""
    return lease if lease is not None and lease.worker.conn is not None and lease.worker.conn.open else None
