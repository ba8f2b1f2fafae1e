"""Issue 25, faults: the ledger's database briefly unavailable.  A `serve` backend whose ledger is a
real PostgreSQL server (tests/integration/postgres_cluster.py) keeps running cells - warm ones, and
a new session's cold one - while that server is down; once it is back, every cell of the outage is
in the ledger, none left in flight."""
from __future__ import annotations

import time

import pytest

from tests.integration.backend_process import api_get, start_backend, stop_backend
from tests.integration.test_ledger_postgres import pg  # noqa: F401  (the throwaway cluster)

from .helpers import TOKEN, Session

pytestmark = pytest.mark.timeout(300)

BOUND = 30.0  # a cell during the outage takes no longer than this (the ledger's retries are not its wait)


def test_cells_run_while_the_ledger_database_is_down_and_are_recorded_once_it_is_back(tmp_path, pg):  # noqa: F811
    proc, url = start_backend(tmp_path, "--token", TOKEN, "--keep-warm", "600", "--ledger", pg.create_db("outage"))
    try:
        a = Session(url, "s-before")
        assert a.run("x = 1\nprint('before')").final["status"] == "ok"
        pg.halt()
        try:
            during = []
            for i in range(5):  # warm cells of a session that was recorded before
                t0 = time.monotonic()
                run = a.run(f"x += 1\nprint(x)", bound=BOUND)
                assert run.final["status"] == "ok" and run.stdout() == f"{i + 2}\n", run.events
                during.append(time.monotonic() - t0)
            b = Session(url, "s-during")  # a new session, its worker cold-started: nothing needs the ledger
            cold = b.run("print('cold')", bound=BOUND)
            assert cold.final["status"] == "ok" and cold.final["cold"] is True, cold.events
        finally:
            pg.resume()
        after = a.run("print('after')")
        assert after.final["status"] == "ok"
        cells = api_get(url, TOKEN, "/api/cells?limit=100", timeout=90)["cells"]
        by_session = {}
        for c in cells:
            by_session.setdefault(c["session"], []).append(c["status"])
        assert by_session == {"s-before": ["ok"] * 7, "s-during": ["ok"]}, by_session
        a.close()
        b.close()
    finally:
        stop_backend(proc)
