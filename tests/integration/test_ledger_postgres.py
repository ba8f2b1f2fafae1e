"""The ledger on PostgreSQL (``--ledger postgresql://...``): the same records and the same recovery
as on SQLite, against a real server - a throwaway cluster this module starts and stops."""
import sqlite3

import pytest

from jupyter_gpu_backend.accounting.ledger import POSTGRES, SCHEMA, SQLITE, Ledger

from .postgres_cluster import Cluster, server_bindir
from .test_ledger import recorded_then_lost_after_a_restart

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def pg():
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'jupyter-gpu[postgres]')")
    bindir = server_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl, pg_isready) in /usr/lib/postgresql/*/bin "
                    "or on PATH: `make postgres-ready` installs them")
    try:
        cluster = Cluster(bindir)
    except KeyError:
        pytest.skip("running as root and there is no `postgres` user to run the server as")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def rows(dsn, sql, args=()):
    import psycopg

    with psycopg.connect(dsn) as db:
        return db.execute(sql, args).fetchall()


def test_cells_are_recorded_and_in_flight_work_is_lost_after_a_restart_on_postgres(tmp_path, pg):
    dsn = pg.create_db("scenario")
    recorded_then_lost_after_a_restart(tmp_path, "--ledger", dsn)

    # it was PostgreSQL that held them: no SQLite file was written, and the rows are in the server
    assert not (tmp_path / "ledger.sqlite3").exists()
    assert f"ledger postgresql {dsn}: in flight at the last stop" in (tmp_path / "log").read_text()
    cells = dict(rows(dsn, "SELECT id, status FROM cells"))  # rows keyed "session/cell"
    assert cells == {"s-ledger/c-ok": "ok", "s-ledger/c-inflight": "lost"}, cells
    # the worker that ran them was live when the backend died: lost too, with that transition recorded
    lost = rows(dsn, "SELECT w.id, w.cause FROM workers w JOIN worker_states s ON s.worker = w.id "
                     "WHERE w.state = 'lost' AND s.state = 'lost'")
    assert lost and all(cause == "the backend stopped" for _, cause in lost), lost
    # timestamps keep sub-second precision (a 4-byte REAL would round them to minutes)
    (submitted, done), = rows(dsn, "SELECT submitted, done FROM cells WHERE id = 's-ledger/c-ok'")
    assert submitted != round(submitted) and 0 < done - submitted < 60


def target(dialect, tmp_path, request, name):
    """A new empty ledger target; the server is started only for PostgreSQL (SQLite runs without)."""
    if dialect == "sqlite":
        return str(tmp_path / f"{name}.sqlite3")
    return request.getfixturevalue("pg").create_db(name)


def normalized(columns: dict, real: str) -> dict:
    """{table: [(column, type, not null)]} with the dialect's float type named REAL."""
    return {t: [(c, "REAL" if typ == real.upper() else typ, nn) for c, typ, nn in cols] for t, cols in columns.items()}


def test_both_dialects_create_the_same_tables_and_columns(tmp_path, pg):
    lite, post = Ledger(str(tmp_path / "l.sqlite3")), Ledger(pg.create_db("schema"))
    try:
        assert lite.dialect is SQLITE and post.dialect is POSTGRES
        a, b = normalized(lite.columns(), SQLITE.real), normalized(post.columns(), POSTGRES.real)
        assert sorted(a) == ["cells", "jobs", "sessions", "worker_states", "workers"]
        assert a == b
        assert ("user", "TEXT", True) in a["cells"] and ("submitted", "REAL", True) in a["cells"]
    finally:
        lite.close()
        post.close()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_an_older_ledger_gains_the_columns_added_since(tmp_path, request, dialect):
    where = target(dialect, tmp_path, request, "old")
    # the first schema: no pool (hybrid pools), no image (worker images)
    old = (SCHEMA.format(real="DOUBLE PRECISION").replace(", pool TEXT, image TEXT", "")
           .replace(",\n    pool TEXT, image TEXT", ""))
    assert "pool" not in old and "image" not in old
    if dialect == "sqlite":
        with sqlite3.connect(where) as db:
            db.executescript(old)
    else:
        import psycopg

        with psycopg.connect(where) as db:
            db.execute(old)
    ledger = Ledger(where)
    try:
        assert ("pool", "TEXT", False) in ledger.columns()["cells"]
        assert ("image", "TEXT", False) in ledger.columns()["cells"]
        ledger.worker_requested("w-old", "cpu", "local")
        ledger.worker_pool("w-old", "dedicated")
        ledger.worker_image("w-old", "a")
        assert ledger.query("SELECT pool, image FROM workers WHERE id = ?", ("w-old",)) == [("dedicated", "a")]
        ledger.cell_started("c-old", "s", "u", "cpu")
        ledger.cell_image("c-old", "a")
        assert [c["image"] for c in ledger.cells("u")] == ["a"]
    finally:
        ledger.close()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_refused_write_is_skipped_alone(tmp_path, request, dialect):
    ledger = Ledger(target(dialect, tmp_path, request, "refused"))
    try:
        # queued together, so one transaction: the second insert of w-1 breaks its primary key
        ledger.worker_requested("w-1", "cpu", "local")
        ledger.worker_requested("w-1", "cpu", "local")
        ledger.session_opened("s-1", "alice")
        ledger.cell_started("c-1", "s-1", "alice", "cpu")
        assert ledger.flush()
        assert ledger.query("SELECT id FROM workers") == [("w-1",)]
        assert ledger.cells("alice") and ledger.cells("alice")[0]["id"] == "c-1"
        assert ledger.query('SELECT id FROM sessions WHERE "user" = ?', ("alice",)) == [("s-1",)]
    finally:
        ledger.close()


def test_writes_queued_while_postgres_restarts_are_committed_once_it_is_back(pg, caplog):
    ledger = Ledger(pg.create_db("restart"))
    try:
        ledger.session_opened("before", "alice")
        assert ledger.flush()
        pg.restart()  # the writer's connection is cut
        ledger.session_opened("after", "alice")
        ledger.cell_started("c-after", "after", "alice", "cpu")
        assert ledger.flush(60), "the writer did not get its batch in after the server came back"
        assert sorted(r[0] for r in ledger.query("SELECT id FROM sessions")) == ["after", "before"]
        assert [c["id"] for c in ledger.cells("alice", "after")] == ["c-after"]
        assert "trying again (2 writes kept)" in caplog.text  # the cut was seen, and the batch kept
    finally:
        ledger.close()


def test_reads_share_the_writers_connection_and_see_what_was_queued_before_them(pg):
    dsn = pg.create_db("reads")
    ledger = Ledger(dsn)
    opened, connect = [], ledger._connect
    ledger._connect = lambda: opened.append(1) or connect()  # counts the connections it opens from now on
    try:
        for i in range(20):  # a sidebar polling /api/cells and /api/queue
            ledger.cell_started(f"c{i}", "s", "alice", "cpu")
            assert [c["id"] for c in ledger.cells("alice", "s", limit=1)] == [f"c{i}"]  # no flush() asked
        assert len(opened) == 1, opened  # the writer's: every read went over it, none opened its own
        ours = rows(dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'jupyter-gpu ledger'")
        assert ours == [(1,)], ours
    finally:
        ledger.close()
    assert [c["id"] for c in ledger.cells("alice", "s", limit=2)] == ["c19", "c18"]  # closed: read directly
