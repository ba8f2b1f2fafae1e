"""The ledger: every session, worker and cell, with its timestamps and phases, in SQLite (default)
or PostgreSQL (a ``postgresql://`` DSN).

It survives a backend restart; whatever was in flight when the previous backend stopped is
recorded as ``lost`` at the next start, never as done.  Writes are queued to one writer thread and
committed in batches (one commit per 0.2 s at most), so the event loop and the warm path of a cell
never wait on disk or on the database server, and the writer does not wake for every cell.

The statements are written once, with ``?`` parameters and SQL both databases accept (quoted
``"user"``, ``INSERT ... ON CONFLICT``); what differs between the two is in ``Dialect``.
"""
from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from jupyter_gpu_backend.private import open_private, private_dir, tighten

log = logging.getLogger("jupyter_gpu_backend.accounting.ledger")

# `user` is quoted: in PostgreSQL a bare `user` is CURRENT_USER, not the column.
# {real} is the dialect's float: PostgreSQL's REAL is 4 bytes, ~2 minutes of resolution on a timestamp.
SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, "user" TEXT NOT NULL, opened {real} NOT NULL, closed {real});
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY, "user" TEXT, session TEXT, gpu TEXT NOT NULL, device TEXT, runtime TEXT,
    start_method TEXT, state TEXT NOT NULL, requested {real} NOT NULL, registered {real},
    stopped {real}, cause TEXT, pool TEXT, image TEXT);
CREATE TABLE IF NOT EXISTS worker_states (
    worker TEXT NOT NULL, state TEXT NOT NULL, at {real} NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    id TEXT PRIMARY KEY, session TEXT NOT NULL, "user" TEXT NOT NULL, gpu TEXT NOT NULL,
    worker TEXT, status TEXT NOT NULL, submitted {real} NOT NULL, done {real}, cold INTEGER,
    queue_s {real}, cold_start_s {real}, load_s {real}, exec_s {real}, post_s {real}, run_s {real},
    pool TEXT, image TEXT, function TEXT, build_s {real});
CREATE INDEX IF NOT EXISTS cells_by_session ON cells (session);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, "user" TEXT NOT NULL, session TEXT, notebook TEXT, function TEXT, gpu TEXT,
    state TEXT NOT NULL, created {real} NOT NULL, finished {real}, expires {real}, cause TEXT, meta TEXT);
"""
# columns added since the first ledgers: (table, column, type) added to a ledger that lacks them
# dedicated.py's attribution; the worker image (images.py; NULL in rows older than the column)
ADDED_COLUMNS = (("workers", "pool", "TEXT"), ("cells", "pool", "TEXT"), ("workers", "image", "TEXT"),
                 ("cells", "image", "TEXT"), ("cells", "function", "TEXT"), ("cells", "build_s", "{real}"))
IN_FLIGHT_CELLS = ("queued", "running")  # also a spawned call's (jobs) in-flight states
JOB_COLUMNS = ("id", "session", "notebook", "function", "gpu", "state", "created", "finished", "expires", "cause", "meta")
BATCH_S = 0.2  # how long the writer gathers rows before one commit
LIVE_WORKERS = ("starting", "idle", "leased")
CELL_COLUMNS = ("id", "session", "gpu", "worker", "status", "submitted", "done", "cold",
                "queue_s", "cold_start_s", "load_s", "exec_s", "post_s", "run_s", "pool", "image", "build_s")
RETRY_MAX_S = 5.0  # longest pause between two tries of a batch while the database is unreachable


def default_path() -> str:
    from jupyter_core.paths import jupyter_data_dir

    d = private_dir(os.path.join(jupyter_data_dir(), "jupyter-gpu"))
    return os.path.join(d, "ledger.sqlite3")


# -- the two dialects ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dialect:
    name: str
    real: str  # the column type of a float (timestamps, seconds)
    placeholder: str  # how a positional parameter is written
    connect: Callable[[str], Any]  # target -> a DB-API connection, set up (pragmas)
    transient: Callable[[BaseException], bool]  # then the same batch is tried again, on a fresh connection
    columns_sql: str  # (table, column, type, not null) of this database's tables: the schema check

    def sql(self, statement: str) -> str:
        return _translate(statement, self.placeholder)


@lru_cache(maxsize=512)  # the ledger's statements are a few dozen strings, each used many times
def _translate(statement: str, placeholder: str) -> str:
    return statement if placeholder == "?" else statement.replace("?", placeholder)


def _sqlite_connect(path: str):
    # the ledger is the backend user's alone: made 0600 before SQLite opens it (its -wal and -shm
    # take the database file's mode); an older one left looser is tightened
    os.close(open_private(path, os.O_RDWR | os.O_CREAT))
    for side in ("-wal", "-shm", "-journal"):
        tighten(path + side)
    db = sqlite3.connect(path, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")  # readers (reports) never block the writer
    # no fsync per commit: a crashed backend loses nothing (WAL); a power cut, the last instants
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def _postgres_connect(dsn: str):
    try:
        import psycopg
    except ImportError as e:  # an optional dependency: say which
        raise RuntimeError("a PostgreSQL ledger needs psycopg: pip install 'jupyter-gpu[postgres]'") from e
    # a ledger that cannot be reached should fail the start in seconds, not hang on a dead address
    return psycopg.connect(dsn, connect_timeout=10, application_name="jupyter-gpu ledger")


def _sqlite_transient(e: BaseException) -> bool:
    # "database is locked" past the busy timeout; other OperationalErrors (syntax) are not transient
    return isinstance(e, sqlite3.OperationalError) and "locked" in str(e)


def _postgres_transient(e: BaseException) -> bool:
    import psycopg

    # connection lost, server restarting or shut down (SQLSTATE classes 08, 57...): the batch is
    # fine, the connection was not
    return isinstance(e, (psycopg.OperationalError, psycopg.InterfaceError))


SQLITE = Dialect(
    name="sqlite", real="REAL", placeholder="?", connect=_sqlite_connect,
    transient=_sqlite_transient,
    columns_sql="SELECT m.name, p.name, p.type, p.\"notnull\" OR p.pk > 0 FROM sqlite_master m, pragma_table_info(m.name) p "
                "WHERE m.type = 'table' ORDER BY m.name, p.cid",
)
POSTGRES = Dialect(
    name="postgresql", real="DOUBLE PRECISION", placeholder="%s", connect=_postgres_connect,
    transient=_postgres_transient,
    columns_sql="SELECT table_name, column_name, upper(data_type), CASE is_nullable WHEN 'NO' THEN 1 ELSE 0 END "
                "FROM information_schema.columns WHERE table_schema = current_schema() "
                "ORDER BY table_name, ordinal_position",
)


def dialect_of(target: str) -> Dialect:
    """A ``postgresql://`` (or ``postgres://``) DSN is PostgreSQL; anything else is a SQLite file."""
    return POSTGRES if target.split("://", 1)[0] in ("postgresql", "postgres") else SQLITE


def redacted(target: str) -> str:
    """The target as it may be logged: a DSN without its password."""
    if "://" not in target:
        return target
    u = urlsplit(target)
    if u.password is None:
        return target
    netloc = u.netloc.replace(f":{u.password}@", ":***@", 1)
    return urlunsplit(u._replace(netloc=netloc))


class _Read:
    """A read for the writer thread: its statement, then its rows or its error."""

    def __init__(self, sql: str, args: tuple):
        self.sql, self.args = sql, args
        self.rows: list = []
        self.error: BaseException | None = None
        self.done = threading.Event()


class Ledger:
    def __init__(self, target: str):
        self.path = target  # a SQLite file, or a PostgreSQL DSN
        self.dialect = dialect_of(target)
        self.where = f"{self.dialect.name} {redacted(target)}"
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._urgent = threading.Event()  # flush(): commit what is queued now
        db = self._connect()
        try:
            for statement in SCHEMA.format(real=self.dialect.real).split(";"):
                if statement.strip():
                    db.execute(statement)
            have = {(t, c) for t, c, *_ in db.execute(self.dialect.columns_sql).fetchall()}
            for table, column, typ in ADDED_COLUMNS:
                if (table, column) not in have:  # a ledger from before that column (SQLite has no ADD ... IF NOT EXISTS)
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {typ.format(real=self.dialect.real)}")
            db.commit()
            self.recovered = self._mark_lost(db)
        finally:
            db.close()
        self._thread = threading.Thread(target=self._writer, name="ledger", daemon=True)
        self._thread.start()

    def _mark_lost(self, db) -> dict:
        """Work in flight when a previous backend stopped: lost, never done."""
        now = time.time()
        sql = self.dialect.sql
        cells = db.execute(
            sql(f"UPDATE cells SET status = 'lost', done = ? WHERE status IN {IN_FLIGHT_CELLS}"), (now,)
        ).rowcount
        live = [r[0] for r in db.execute(f"SELECT id FROM workers WHERE state IN {LIVE_WORKERS}").fetchall()]
        for wid in live:
            db.execute(sql("INSERT INTO worker_states VALUES (?, 'lost', ?)"), (wid, now))
        db.execute(
            sql(f"UPDATE workers SET state = 'lost', stopped = ?, cause = 'the backend stopped' "
                f"WHERE state IN {LIVE_WORKERS}"), (now,)
        )
        db.execute(sql("UPDATE sessions SET closed = ? WHERE closed IS NULL"), (now,))
        jobs = db.execute(
            sql(f"UPDATE jobs SET state = 'lost', finished = ?, cause = 'the backend stopped while it ran' "
                f"WHERE state IN {IN_FLIGHT_CELLS}"), (now,)
        ).rowcount
        db.commit()
        return {"cells": cells, "workers": len(live), "jobs": jobs}

    # -- writes (queued; the writer thread commits) ----------------------------------------------
    def _put(self, sql: str, args: tuple) -> None:
        self._q.put((self.dialect.sql(sql), args))

    def session_opened(self, sid: str, user: str) -> None:
        self._put('INSERT INTO sessions VALUES (?, ?, ?, NULL) ON CONFLICT (id) DO NOTHING', (sid, user, time.time()))

    def session_closed(self, sid: str) -> None:
        self._put("UPDATE sessions SET closed = ? WHERE id = ?", (time.time(), sid))

    def worker_image(self, wid: str, image: str) -> None:
        """The worker image it started from (images.py)."""
        self._put("UPDATE workers SET image = ? WHERE id = ?", (image, wid))

    def cell_image(self, cid: str, image: str) -> None:
        """The worker image the cell asked for (after its cell_started)."""
        self._put("UPDATE cells SET image = ? WHERE id = ?", (image, cid))

    def cell_function(self, cid: str, function: str) -> None:
        """A function's call (`@jupyter_gpu.function`): its name@hash (after its cell_started)."""
        self._put("UPDATE cells SET function = ? WHERE id = ?", (function, cid))

    def job_created(self, jid: str, user: str, session: str, notebook: str, function: str | None, gpu: str,
                    meta: str) -> None:
        self._put('INSERT INTO jobs (id, "user", session, notebook, function, gpu, state, created, meta) '
                  "VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?)", (jid, user, session, notebook, function, gpu,
                                                               time.time(), meta))

    def job_state(self, jid: str, state: str, finished: float | None = None, expires: float | None = None,
                  cause: str | None = None) -> None:
        self._put("UPDATE jobs SET state = ?, finished = COALESCE(?, finished), expires = COALESCE(?, expires), "
                  "cause = COALESCE(?, cause) WHERE id = ?", (state, finished, expires, cause, jid))

    def worker_requested(self, wid: str, gpu: str, runtime: str) -> None:
        now = time.time()
        self._put("INSERT INTO workers (id, gpu, runtime, state, requested) VALUES (?, ?, ?, 'starting', ?)",
                  (wid, gpu, runtime, now))
        self._put("INSERT INTO worker_states VALUES (?, 'starting', ?)", (wid, now))

    def worker_state(self, wid: str, state: str, **fields) -> None:
        """A transition: starting -> idle -> leased -> stopping -> stopped (or lost)."""
        now = time.time()
        cols = {"state": state, **fields}
        if state == "idle" and "device" in fields:
            cols["registered"] = now
        if state in ("stopped", "lost"):
            cols["stopped"] = now
        sets = ", ".join(f'"{k}" = ?' for k in cols)  # quoted: `user` is one of them
        self._put(f"UPDATE workers SET {sets} WHERE id = ?", (*cols.values(), wid))
        self._put("INSERT INTO worker_states VALUES (?, ?, ?)", (wid, state, now))

    def cell_started(self, cid: str, session: str, user: str, gpu: str, status: str = "running",
                     at: float | None = None) -> None:
        # a cell id seen again starts afresh: what an earlier try recorded is cleared (as a REPLACE would)
        self._put('INSERT INTO cells (id, session, "user", gpu, status, submitted) VALUES (?, ?, ?, ?, ?, ?) '
                  'ON CONFLICT (id) DO UPDATE SET session = excluded.session, "user" = excluded."user", '
                  "gpu = excluded.gpu, status = excluded.status, submitted = excluded.submitted, worker = NULL, "
                  "done = NULL, cold = NULL, queue_s = NULL, cold_start_s = NULL, load_s = NULL, exec_s = NULL, "
                  "post_s = NULL, run_s = NULL, pool = NULL",
                  (cid, session, user, gpu, status, time.time() if at is None else at))

    def cell_lost_unseen(self, cid: str, session: str, user: str, gpu: str, worker: str) -> None:
        """A cell this backend never saw, lost with a worker of a backend before it (a lane cell that
        ran as that one stopped): recorded unless that backend recorded it already."""
        now = time.time()
        self._put('INSERT INTO cells (id, session, "user", gpu, status, submitted, done, worker, cold) '
                  "VALUES (?, ?, ?, ?, 'lost', ?, ?, ?, 0) ON CONFLICT (id) DO NOTHING",
                  (cid, session, user, gpu, now, now, worker))

    def worker_pool(self, wid: str, pool: str) -> None:
        """Which pool the worker belongs to: dedicated or serverless (dedicated.py)."""
        self._put("UPDATE workers SET pool = ? WHERE id = ?", (pool, wid))

    def cell_pool(self, cid: str, pool: str) -> None:
        self._put("UPDATE cells SET pool = ? WHERE id = ?", (pool, cid))

    def cell_running(self, cid: str) -> None:
        self._put("UPDATE cells SET status = 'running' WHERE id = ?", (cid,))

    def cell_done(self, cid: str, status: str, worker: str | None, cold: bool, timings: dict,
                  at: float | None = None) -> None:
        t = timings
        self._put(
            "UPDATE cells SET status = ?, worker = ?, cold = ?, done = ?, queue_s = ?, cold_start_s = ?, "
            "load_s = ?, exec_s = ?, post_s = ?, run_s = ?, build_s = ? WHERE id = ?",
            (status, worker, int(cold), time.time() if at is None else at, t.get("queue"), t.get("cold_start"), t.get("load"),
             t.get("exec"), t.get("post"), t.get("run"), t.get("build"), cid),
        )

    # -- the writer ----------------------------------------------------------------------------
    def _connect(self):
        return self.dialect.connect(self.path)

    def _writer(self) -> None:
        db = None
        while True:
            item = self._q.get()
            if isinstance(item, tuple):
                # gather for a moment: one commit per batch, and no wake-up per cell on the hot path
                # (a flush does not wait for the moment: a spawned call's row is committed before its id is given)
                self._urgent.wait(BATCH_S)
                self._urgent.clear()
            batch = [item]
            while True:  # everything already queued goes in the same transaction
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            writes = [e for e in batch if isinstance(e, tuple)]
            if writes:
                db = self._commit(db, writes)
            for e in batch:
                if isinstance(e, threading.Event):
                    e.set()
                elif isinstance(e, _Read):
                    db = self._read(db, e)
            if None in batch:  # close(): everything queued before it is committed
                if db is not None:
                    db.close()
                return

    def _commit(self, db, writes: list):
        """Commit ``writes`` in one transaction and return the connection to use next.  While the
        database cannot be reached the batch is kept and tried again (a database restart drops
        nothing recorded); a statement the database refuses is logged and skipped alone."""
        pause = 0.1
        while True:
            try:
                if db is None:
                    db = self._connect()
                try:
                    for statement in writes:
                        db.execute(*statement)
                    db.commit()
                except Exception as e:
                    if self.dialect.transient(e):
                        raise
                    db.rollback()
                    self._one_by_one(db, writes)
                return db
            except Exception as e:
                if db is not None and not self.dialect.transient(e):
                    raise  # a bug of ours, not the database's state: the writer's traceback says where
                log.warning("ledger %s: %s; trying again (%d writes kept)", self.where, e, len(writes))
                _close_quietly(db)
                db = None
                time.sleep(pause)  # back off: the server is restarting or unreachable
                pause = min(pause * 2, RETRY_MAX_S)

    def _read(self, db, read: _Read):
        """Answer ``read`` on the writer's own connection (after the writes queued before it are
        committed): a read costs no connection of its own, which on PostgreSQL is a TCP and auth
        round trip per sidebar poll.  Returns the connection to use next."""
        try:
            if db is None:
                db = self._connect()
            read.rows = db.execute(self.dialect.sql(read.sql), read.args).fetchall()
            db.rollback()  # end the read's transaction: no snapshot held until the next batch
        except Exception as e:
            read.error = e
            _close_quietly(db)
            db = None  # a broken connection is opened anew by the next batch
        read.done.set()
        return db

    def _one_by_one(self, db, writes: list) -> None:
        """A batch the database refused: each write in its own transaction, the refused ones skipped."""
        for statement in writes:
            try:
                db.execute(*statement)
                db.commit()
            except Exception as e:
                if self.dialect.transient(e):
                    raise
                db.rollback()
                log.error("ledger %s: a write was refused and skipped: %s %s: %s",
                          self.where, statement[0], statement[1], e)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is committed."""
        e = threading.Event()
        self._q.put(e)
        self._urgent.set()
        return e.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued and stop the writer (a backend that stops keeps its last rows)."""
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join(timeout)

    def query(self, sql: str, args: tuple = (), timeout: float = 30.0) -> list:
        """Rows of a read (``?`` parameters), after everything queued so far is committed."""
        if not self._thread.is_alive():  # closed: nothing is queued, read directly
            db = self._connect()
            try:
                return db.execute(self.dialect.sql(sql), args).fetchall()
            finally:
                db.close()
        read = _Read(sql, args)
        self._q.put(read)
        if not read.done.wait(timeout):
            raise TimeoutError(f"ledger {self.where}: no answer to a read within {timeout:.0f} s "
                               "(is the database reachable? the writer keeps retrying)")
        if read.error is not None:
            raise read.error
        return read.rows

    # -- reads -----------------------------------------------------------------------------------
    def cells(self, user: str, session: str | None = None, limit: int = 1000) -> list[dict]:
        """A user's cells (of one session, if given), newest first, each with the device its worker
        reported ("cpu (2 cores)" sizes a per-core price; None before a worker had it) and when
        that worker stopped (the keep-warm idle after its last cell ends there)."""
        where, args = 'c."user" = ?', [user]
        if session:
            where, args = where + " AND c.session = ?", args + [session]
        rows = self.query(f"SELECT {', '.join('c.' + c for c in CELL_COLUMNS)}, w.device, w.stopped FROM cells c "
                          f"LEFT JOIN workers w ON w.id = c.worker WHERE {where} "
                          f"ORDER BY c.submitted DESC LIMIT ?", (*args, limit))
        out = [dict(zip((*CELL_COLUMNS, "device", "worker_stopped"), r)) for r in rows]
        for c in out:  # a row's key is "session/cell" (scheduling/model.py: row_id): its id is the kernel's
            c["id"] = cell_id(c["id"], c["session"])
        return out

    def jobs(self, user: str, job: str | None = None, notebook: str | None = None, limit: int = 200) -> list[dict]:
        """A user's spawned calls (one by id, or those of one notebook), newest first."""
        where, args = '"user" = ?', [user]
        if job is not None:
            where, args = where + " AND id = ?", args + [job]
        if notebook is not None:
            where, args = where + " AND notebook = ?", args + [notebook]
        rows = self.query(f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs WHERE {where} ORDER BY created DESC LIMIT ?",
                          (*args, limit))
        return [dict(zip(JOB_COLUMNS, r)) for r in rows]

    def expired_jobs(self, now: float) -> list[str]:
        """Ended calls whose result's time is up."""
        return [r[0] for r in self.query("SELECT id FROM jobs WHERE expires IS NOT NULL AND expires < ? "
                                         "AND state <> 'expired'", (now,))]

    def queued_cells(self, user: str) -> list[tuple]:
        """(row, session, gpu, image) of a user's cells waiting for a worker (``cell_id`` of the row:
        the kernel's id)."""
        return [tuple(r) for r in self.query("SELECT id, session, gpu, image FROM cells WHERE \"user\" = ? "
                                             "AND status = 'queued'", (user,))]

    def columns(self) -> dict:
        """{table: [(column, type, not null)]}: what this database holds (the dialects' schema check)."""
        tables: dict = {}
        for table, column, typ, notnull in self.query(self.dialect.columns_sql):
            tables.setdefault(table, []).append((column, typ.upper(), bool(notnull)))
        return tables


def cell_id(row: str, session: str) -> str:
    """The kernel's id of the cell of ``row``: rows are keyed "session/cell" (scheduling/model.py:
    row_id), a row from before that by the id alone."""
    return row[len(session) + 1:] if row.startswith(session + "/") else row


def _close_quietly(db) -> None:
    try:
        if db is not None:
            db.close()
    except Exception:  # a connection that already broke may fail to close; it is gone either way
        pass


class NullLedger:
    """Records nothing (a scheduler built without a ledger, e.g. in a unit test)."""

    recovered = {"cells": 0, "workers": 0}

    def __getattr__(self, name):
        return lambda *args, **kwargs: None
