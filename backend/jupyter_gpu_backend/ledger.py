"""The ledger: every session, worker and cell, with its timestamps and phases, in SQLite.

It survives a backend restart; whatever was in flight when the previous backend stopped is
recorded as ``lost`` at the next start, never as done.  Writes are queued to one writer thread and
committed in batches (one commit per 0.2 s at most), so the event loop and the warm path of a cell
never wait on disk, and the writer does not wake for every cell.
PostgreSQL is a later step (issue 4); the statements are plain SQL with positional parameters.
"""
from __future__ import annotations

import os
import queue
import sqlite3
import threading
import time

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, user TEXT NOT NULL, opened REAL NOT NULL, closed REAL);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY, user TEXT, session TEXT, gpu TEXT NOT NULL, device TEXT, runtime TEXT,
    start_method TEXT, state TEXT NOT NULL, requested REAL NOT NULL, registered REAL,
    stopped REAL, cause TEXT);
CREATE TABLE IF NOT EXISTS worker_states (
    worker TEXT NOT NULL, state TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    id TEXT PRIMARY KEY, session TEXT NOT NULL, user TEXT NOT NULL, gpu TEXT NOT NULL,
    worker TEXT, status TEXT NOT NULL, submitted REAL NOT NULL, done REAL, cold INTEGER,
    queue_s REAL, cold_start_s REAL, load_s REAL, exec_s REAL, post_s REAL, run_s REAL);
CREATE INDEX IF NOT EXISTS cells_by_session ON cells (session);
"""
IN_FLIGHT_CELLS = ("queued", "running")
BATCH_S = 0.2  # how long the writer gathers rows before one commit
LIVE_WORKERS = ("starting", "idle", "leased")


def default_path() -> str:
    from jupyter_core.paths import jupyter_data_dir

    d = os.path.join(jupyter_data_dir(), "jupyter-gpu")
    os.makedirs(d, mode=0o700, exist_ok=True)
    return os.path.join(d, "ledger.sqlite3")


class Ledger:
    def __init__(self, path: str):
        self.path = path
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        db = self._connect()
        db.executescript(SCHEMA)
        self.recovered = self._mark_lost(db)
        db.close()
        self._thread = threading.Thread(target=self._writer, name="ledger", daemon=True)
        self._thread.start()

    @staticmethod
    def _mark_lost(db) -> dict:
        """Work in flight when a previous backend stopped: lost, never done."""
        now = time.time()
        cells = db.execute(
            f"UPDATE cells SET status = 'lost', done = ? WHERE status IN {IN_FLIGHT_CELLS}", (now,)
        ).rowcount
        live = [r[0] for r in db.execute(f"SELECT id FROM workers WHERE state IN {LIVE_WORKERS}")]
        for wid in live:
            db.execute("INSERT INTO worker_states VALUES (?, 'lost', ?)", (wid, now))
        db.execute(
            f"UPDATE workers SET state = 'lost', stopped = ?, cause = 'the backend stopped' "
            f"WHERE state IN {LIVE_WORKERS}", (now,)
        )
        db.execute("UPDATE sessions SET closed = ? WHERE closed IS NULL", (now,))
        db.commit()
        return {"cells": cells, "workers": len(live)}

    # -- writes (queued; the writer thread commits) ----------------------------------------------
    def _put(self, sql: str, args: tuple) -> None:
        self._q.put((sql, args))

    def session_opened(self, sid: str, user: str) -> None:
        self._put("INSERT OR IGNORE INTO sessions VALUES (?, ?, ?, NULL)", (sid, user, time.time()))

    def session_closed(self, sid: str) -> None:
        self._put("UPDATE sessions SET closed = ? WHERE id = ?", (time.time(), sid))

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
        sets = ", ".join(f"{k} = ?" for k in cols)
        self._put(f"UPDATE workers SET {sets} WHERE id = ?", (*cols.values(), wid))
        self._put("INSERT INTO worker_states VALUES (?, ?, ?)", (wid, state, now))

    def cell_started(self, cid: str, session: str, user: str, gpu: str, status: str = "running") -> None:
        self._put("INSERT OR REPLACE INTO cells (id, session, user, gpu, status, submitted) VALUES (?, ?, ?, ?, ?, ?)",
                  (cid, session, user, gpu, status, time.time()))

    def cell_running(self, cid: str) -> None:
        self._put("UPDATE cells SET status = 'running' WHERE id = ?", (cid,))

    def cell_done(self, cid: str, status: str, worker: str | None, cold: bool, timings: dict) -> None:
        t = timings
        self._put(
            "UPDATE cells SET status = ?, worker = ?, cold = ?, done = ?, queue_s = ?, cold_start_s = ?, "
            "load_s = ?, exec_s = ?, post_s = ?, run_s = ? WHERE id = ?",
            (status, worker, int(cold), time.time(), t.get("queue"), t.get("cold_start"), t.get("load"),
             t.get("exec"), t.get("post"), t.get("run"), cid),
        )

    # -- the writer ----------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")  # readers (reports) never block the writer
        # no fsync per commit: a crashed backend loses nothing (WAL); a power cut, the last instants
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _writer(self) -> None:
        db = self._connect()
        while True:
            item = self._q.get()
            if not isinstance(item, threading.Event):
                # gather for a moment: one commit per batch, and no wake-up per cell on the hot path
                time.sleep(BATCH_S)
            batch = [item]
            while True:  # everything already queued goes in the same transaction
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            done_events = []
            for entry in batch:
                if isinstance(entry, threading.Event):
                    done_events.append(entry)
                else:
                    db.execute(*entry)
            db.commit()
            for e in done_events:
                e.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is committed."""
        e = threading.Event()
        self._q.put(e)
        return e.wait(timeout)

    def query(self, sql: str, args: tuple = ()) -> list:
        self.flush()
        db = self._connect()
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()


class NullLedger:
    """Records nothing (a scheduler built without a ledger, e.g. in a unit test)."""

    recovered = {"cells": 0, "workers": 0}

    def __getattr__(self, name):
        return lambda *args, **kwargs: None
