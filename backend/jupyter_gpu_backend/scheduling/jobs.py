"""Spawned function calls (``f.spawn``): jobs the backend owns, durable past the kernel and the backend.

A kernel's ``execute`` with ``job`` becomes a job: the backend gives it an id (``fc-`` + 16 hex, never
the kernel's choice), answers ``job_reply`` at once, and runs it as a cell of a session of its own
(``JobSession``, the user's), so the kernel may exit, restart or lose its connection meanwhile.  The
job's events (output, its error, its ``done`` with the value) are kept, in memory while it runs, and
in the result store (``JobStore``: one file of frames per job) once it ends; its state is a row of
the ledger's ``jobs`` table.  ``job_get`` replays a job's events under the asking kernel's request
id, then, while it runs, forwards the rest as they come: a getter sees all of its output, once, in
order, whether it asks before, during or after the run, from the kernel that spawned it or another
of the same user, from this backend or a later one (the ledger and the store outlive it).

- A job that ran when its backend stopped is ``lost`` (marked at the next start by the ledger; at a
  graceful stop by ``shutdown``): a getter is told so, never left waiting.
- Results are kept ``ttl`` seconds after the job ends ($JUPYTER_GPU_JOB_TTL, default 7 days, as
  Modal keeps a FunctionCall's result), then the file goes and the row says ``expired``.
- A job's workers are warm for its keep-warm like a kernel's, and the next job of the same user and
  pool takes one that is idle (no cold start); a job asks no one for ``input()`` (it gets EOFError).
- Output a job keeps is capped (``OUTPUT_KEPT``); beyond it, one note says what was dropped.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import struct
import time

from jupyter_gpu._wire import framing, messages

from jupyter_gpu_backend.private import private_dir
from jupyter_gpu_backend.scheduling.model import CellRun, Session

log = logging.getLogger("jupyter_gpu_backend")

OUTPUT_KEPT = 64 * 1024 * 1024  # bytes of a job's output events kept (its `done` and value always are)
CANCEL_GRACE = 5.0  # a cancelled job still running this long after its interrupt: its worker is killed
PRUNE_EVERY = 60.0  # seconds between two sweeps of expired results
ENDED = ("done", "failed", "cancelled", "lost", "expired")
_TERMINAL = (messages.DONE, messages.FAILURE)
_NOT_KEPT = (messages.PHASE, messages.RESEND)  # (a phase is live news; a job's resend is not asked for)


class Job:
    def __init__(self, jid: str, user: str, origin: str, notebook: str, meta: dict, run: CellRun):
        self.id, self.user, self.origin, self.notebook, self.meta, self.run = jid, user, origin, notebook, meta, run
        self.state = "queued"
        self.created, self.finished, self.expires = time.time(), None, None
        self.cause: str | None = None
        self.events: list[list[bytes]] = []  # each event's frames, the first with its header
        self.kept = 0
        self.dropped = 0
        self.watchers: list[asyncio.Queue] = []
        self.ended = asyncio.Event()
        self.cancelled = False
        self.session: JobSession | None = None

    def reply(self, **extra) -> dict:
        return {"type": messages.JOB_REPLY, "job": self.id, "state": self.state, "function": self.run.function,
                "notebook": self.notebook, "gpu": self.run.gpu, "created": self.created, "finished": self.finished,
                "expires": self.expires, "cause": self.cause, **self.meta, **extra}


class JobSession(Session):
    """A session the backend owns for its jobs: what the scheduler sends its cell goes to the job."""

    kernel = False  # the backend's own: not counted as one of its user's sessions (caps.py)
    jobs: "Jobs"
    job: Job | None = None
    origin: str = ""  # the spawning kernel's session id

    async def emit(self, header: dict, inline=b"", frames=()) -> None:
        job = self.job
        if job is not None and header.get("cell") == job.id:
            await self.jobs.record(job, header, inline, list(frames))


class JobStore:
    """Ended jobs' events, one file each: per event its frame count, then each frame's length and bytes."""

    def __init__(self, root: str):
        self.root = root
        private_dir(root)  # results are their users' alone (0700; each file 0600)

    def path(self, jid: str) -> str:
        return os.path.join(self.root, f"{jid}.frames")

    def write(self, jid: str, events: list[list[bytes]]) -> None:
        tmp = self.path(jid) + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            for frames in events:
                f.write(struct.pack("<I", len(frames)))
                for fr in frames:
                    f.write(struct.pack("<Q", len(fr)))
                    f.write(fr)
        os.replace(tmp, self.path(jid))  # a reader never sees half a result

    def read(self, jid: str) -> list[list[bytes]] | None:
        try:
            with open(self.path(jid), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        events, at, view = [], 0, memoryview(data)
        while at < len(data):
            (n,), at = struct.unpack_from("<I", data, at), at + 4
            frames = []
            for _ in range(n):
                (size,), at = struct.unpack_from("<Q", data, at), at + 8
                frames.append(bytes(view[at:at + size]))
                at += size
            events.append(frames)
        return events

    def remove(self, jid: str) -> None:
        try:
            os.unlink(self.path(jid))
        except FileNotFoundError:
            pass


def default_store() -> str:
    from jupyter_core.paths import jupyter_data_dir

    return os.path.join(jupyter_data_dir(), "jupyter-gpu", "jobs")


class Jobs:
    def __init__(self, scheduler, store: JobStore, ttl: float):
        self.scheduler, self.store, self.ttl = scheduler, store, ttl
        self.live: dict[str, Job] = {}  # jobs of this backend (ended ones until their result is written)
        # (spawning session, pool key) -> job sessions free for its next job
        self.idle: dict[tuple, list[JobSession]] = {}
        self._pruned = 0.0
        self._tasks: set = set()
        self._waiting: dict = {}  # (session id, get's cell) -> its queue: what a stop press ends

    @property
    def ledger(self):
        return self.scheduler.ledger

    def running(self) -> int:
        return sum(1 for j in self.live.values() if j.state not in ENDED)

    # -- a spawn -------------------------------------------------------------------------------------
    def start(self, origin: Session, run: CellRun, header: dict) -> Job:
        """Make ``run`` (a kernel's execute with ``job``) a job: its id, its session, its ledger row."""
        spec = header.get("job") or {}
        meta = {"map": bool(spec.get("map")), "return_exceptions": bool(spec.get("return_exceptions"))}
        job = Job(f"fc-{secrets.token_hex(8)}", origin.user, origin.id, str(spec.get("notebook") or ""), meta, run)
        run.id = header["cell"] = job.id
        header.pop("expect_worker", None)
        header["shm"] = False  # its value is stored, not mapped by a kernel
        session = job.session = self._session_for(origin, run.key)
        session.job = job
        run.session = session
        self.live[job.id] = job
        self.ledger.job_created(job.id, job.user, origin.id, job.notebook, run.function, run.gpu,
                                json.dumps(meta))
        self._prune_later()
        return job

    def _session_for(self, origin: Session, key: str) -> JobSession:
        """A job session of the spawning kernel's: its id starts with the kernel's session id, so
        what its calls cost is that notebook's where sessions are matched by it (the lab sidebar)."""
        free = self.idle.get((origin.id, key), [])
        while free:
            s = free.pop()
            if self.scheduler.warm_lease(s, key) is not None:
                return s  # its worker is warm: no cold start
            self._close(s)
        s = JobSession(f"{origin.id}-job-{secrets.token_hex(4)}", origin.user)
        s.jobs = self
        s.origin = origin.id
        self.scheduler.sessions[s.id] = s
        self.ledger.session_opened(s.id, origin.user)
        return s

    def _close(self, s: JobSession) -> None:
        if not s.leases:
            self.scheduler.sessions.pop(s.id, None)
            self.ledger.session_closed(s.id)
        else:  # (a lease still warm, its worker busy elsewhere? never: released with the session)
            self._spawn(self.scheduler.close_session(s))

    # -- its events ----------------------------------------------------------------------------------
    async def record(self, job: Job, header: dict, inline, frames: list) -> None:
        kind = header.get("type")
        if kind == messages.INPUT_REQUEST:  # nobody to ask: what input() raises where no one can answer
            worker = job.run.worker
            if worker is not None and worker.conn is not None:
                await worker.conn.send({"type": messages.INPUT_REPLY, "cell": job.id,
                                        "error": {"ename": "EOFError", "evalue": "a spawned call has no stdin"}})
            return
        if kind == messages.PHASE and header.get("phase") == "running" and job.state == "queued":
            job.state = "running"
            self.ledger.job_state(job.id, "running")
        header.pop("seq", None)
        event = [bytes(framing.with_header(header, inline)), *[bytes(f) for f in frames]]
        if kind not in _NOT_KEPT:
            size = sum(len(f) for f in event)
            if kind in _TERMINAL or kind == messages.ERROR or job.kept + size <= OUTPUT_KEPT:
                job.kept += size
                job.events.append(event)
            else:
                job.dropped += size
        for q in list(job.watchers):
            q.put_nowait(event)
        if kind in _TERMINAL:
            await self._ended(job, header)

    async def _ended(self, job: Job, header: dict) -> None:
        status = header.get("status") if header.get("type") == messages.DONE else "error"
        if status == "ok":
            job.state = "done"
        elif job.cancelled and status in ("interrupted", "killed", "error"):
            job.state, job.cause = "cancelled", "cancelled"
        elif status in ("lost", "killed"):
            job.state, job.cause = "lost", "its worker died while it ran"
        else:
            job.state = "failed"
            job.cause = header.get("message") if header.get("type") == messages.FAILURE else status
        if job.dropped:
            note = {"type": messages.STREAM, "cell": job.id, "name": "stderr",
                    "text": f"jupyter-gpu: {job.dropped} bytes of this call's output were not kept "
                            f"(a spawned call keeps {OUTPUT_KEPT // 2**20} MiB)\n"}
            job.events.insert(len(job.events) - 1, [bytes(framing.with_header(note, b""))])
        job.finished = time.time()
        job.expires = job.finished + self.ttl
        try:
            await asyncio.to_thread(self.store.write, job.id, job.events)
        except OSError as e:
            job.state, job.cause = "lost", f"its result could not be stored: {e}"
        self.ledger.job_state(job.id, job.state, job.finished, job.expires, job.cause)
        job.ended.set()
        job.events = []  # (in the store now)
        self.live.pop(job.id, None)
        session = job.session
        session.job = None
        self.idle.setdefault((session.origin, job.run.key), []).append(session)

    # -- what a kernel asks --------------------------------------------------------------------------
    async def lookup(self, user: str, jid: str) -> dict | None:
        """The job's reply fields (this backend's, else the ledger's), or None: not this user's."""
        job = self.live.get(jid)
        if job is not None:
            return job.reply() if job.user == user else None
        rows = await asyncio.to_thread(self.ledger.jobs, user, jid)
        if not rows:
            return None
        r = rows[0]
        meta = json.loads(r.get("meta") or "{}")
        if r["state"] != "expired" and r["expires"] is not None and r["expires"] < time.time():
            r["state"] = "expired"  # its time is up (the sweep may not have come by yet)
            await asyncio.to_thread(self.store.remove, jid)
            self.ledger.job_state(jid, "expired")
        return {"type": messages.JOB_REPLY, "job": jid, **{k: r[k] for k in ("state", "function", "notebook", "gpu",
                "created", "finished", "expires", "cause")}, **meta}

    async def get(self, session: Session, cell: str, jid: str, timeout: float | None, after: int = 0) -> None:
        """Replay the job's events under ``cell`` (but the first ``after`` outputs, shown already);
        while it runs, the rest as they come."""
        skip = [after]
        job = self.live.get(jid)
        if job is not None and job.user == session.user and not job.ended.is_set():
            queue: asyncio.Queue = asyncio.Queue()
            job.watchers.append(queue)
            past = list(job.events)  # (no await between these two: nothing missed, nothing twice)
            self._waiting[(session.id, cell)] = queue
            try:
                ended = False
                for event in past:
                    ended = await self._send(session, cell, event, skip)
                if ended:
                    return
                deadline = None if timeout is None else time.monotonic() + timeout
                while True:
                    left = None if deadline is None else max(0.0, deadline - time.monotonic())
                    try:
                        event = await asyncio.wait_for(queue.get(), left)
                    except asyncio.TimeoutError:
                        await session.emit(messages.failure(
                            "job_timeout", f"{jid} did not finish within {timeout:g} s; it runs on "
                            f"(FunctionCall.from_id({jid!r}).get() later)", cell=cell))
                        return
                    if event is None:  # the stop button: this wait ends, the job runs on
                        await session.emit({"type": messages.ERROR, "cell": cell, "ename": "KeyboardInterrupt",
                                            "evalue": f"stopped waiting for {jid}; it runs on", "traceback": []})
                        await session.emit(messages.done(cell, "interrupted"))
                        return
                    if await self._send(session, cell, event, skip):
                        return
            finally:
                self._waiting.pop((session.id, cell), None)
                if queue in job.watchers:
                    job.watchers.remove(queue)
        info = await self.lookup(session.user, jid)
        if info is None:
            await session.emit(messages.failure("no_such_job", f"no spawned call {jid!r} of yours on this backend",
                                                cell=cell))
            return
        state = info["state"]
        if state in ("lost", "expired"):
            why = info.get("cause") or ("its result was let go after its time was up" if state == "expired" else "")
            code = "job_lost" if state == "lost" else "no_such_job"
            await session.emit(messages.failure(code, f"spawned call {jid} was {state}: {why}", cell=cell))
            return
        events = await asyncio.to_thread(self.store.read, jid)
        if events is None:
            await session.emit(messages.failure("no_such_job", f"the result of {jid} is not in this backend's "
                                                f"store ({self.store.root})", cell=cell))
            return
        for event in events:
            await self._send(session, cell, event, skip)

    def stop_waiting(self, session: Session, cell: str) -> bool:
        """The stop button during a ``get``: the wait ends (the job does not)."""
        queue = self._waiting.get((session.id, cell))
        if queue is None:
            return False
        queue.put_nowait(None)
        return True

    async def _send(self, session: Session, cell: str, event: list[bytes], skip: list) -> bool:
        """Send a kept event under ``cell`` (but the first ``skip[0]`` outputs); whether it was the
        job's last (its ``done`` or ``failure``)."""
        header, inline = framing.parse_first(event[0])
        last = header.get("type") in _TERMINAL
        if skip[0] > 0 and not last:
            skip[0] -= 1
            return False
        header["cell"] = cell
        await session.emit(header, inline, event[1:])
        return last

    async def cancel(self, session: Session, jid: str) -> dict | None:
        """Stop the job (its queue place, its cold start or its run: interrupted, then killed after
        CANCEL_GRACE); the reply once it has ended."""
        job = self.live.get(jid)
        if job is not None and job.user == session.user and not job.ended.is_set():
            job.cancelled = True
            await self.scheduler.interrupt(job.session, jid)
            try:
                await asyncio.wait_for(job.ended.wait(), CANCEL_GRACE)
            except asyncio.TimeoutError:
                await self.scheduler.kill(job.session, jid)
                try:
                    await asyncio.wait_for(job.ended.wait(), CANCEL_GRACE * 2)
                except asyncio.TimeoutError:
                    pass
            return job.reply()
        return await self.lookup(session.user, jid)

    async def listing(self, user: str, notebook: str) -> list[dict]:
        rows = await asyncio.to_thread(self.ledger.jobs, user, None, notebook)
        out = []
        for r in rows:
            live = self.live.get(r["id"])
            if live is not None:
                out.append({k: v for k, v in live.reply().items() if k != "type"})
                continue
            meta = json.loads(r.pop("meta") or "{}")
            r["job"] = r.pop("id")
            r.pop("session", None)
            out.append({**r, **meta})
        return out

    # -- housekeeping ----------------------------------------------------------------------------------
    def _prune_later(self) -> None:
        now = time.monotonic()
        if now - self._pruned >= PRUNE_EVERY:
            self._pruned = now
            self._spawn(self.prune())

    async def prune(self) -> int:
        """Let go of the results whose time is up (file removed, row ``expired``)."""
        try:
            gone = await asyncio.to_thread(self.ledger.expired_jobs, time.time())
        except Exception as e:  # the ledger unreachable: tried again at the next spawn
            log.warning("could not look for expired call results: %s", e)
            return 0
        for jid in gone:
            await asyncio.to_thread(self.store.remove, jid)
            self.ledger.job_state(jid, "expired")
        return len(gone)

    def shutdown(self) -> None:
        """The backend stops: jobs still running are lost (their getters hear it from the ledger)."""
        now = time.time()
        for job in self.live.values():
            if not job.ended.is_set():
                job.state, job.cause = "lost", "the backend stopped while it ran"
                self.ledger.job_state(job.id, "lost", now, None, job.cause)
                for q in job.watchers:
                    q.put_nowait([bytes(framing.with_header(messages.failure("job_lost", f"spawned call {job.id} "
                                 "was lost: the backend stopped while it ran", cell=job.id), b""))])

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
