"""Issue 24, finding 2: a worker's slot cannot be taken.  Its one-time secret never is in its
environment (tests/security/test_sandbox.py looks); here, a registration that names a worker the
backend is not starting - forged, or replayed with a worker's id once it registered - is refused
and logged, and the worker it names keeps serving its user."""
from __future__ import annotations

import pytest
from websockets.exceptions import InvalidStatus

from jupyter_gpu._client.connection import BackendClient, open_websocket
from tests.integration.backend_process import start_backend, stop_backend
from tests.integration.test_backend_robustness import run_cell

pytestmark = pytest.mark.timeout(120)
TOKEN = "registration-token"


def test_a_forged_or_replayed_registration_is_refused_and_logged(tmp_path):
    proc, url = start_backend(tmp_path, "--token", TOKEN)
    try:
        c = BackendClient(url, TOKEN, "s-reg")
        worker = run_cell(c, "# %%gpu\nx = 1", "c1")[-1]["worker"]
        ws_url = url.replace("http", "ws") + "/ws/worker"
        for worker_id in ("w-forged", worker):  # one never started; one registered already (a replay)
            with pytest.raises(InvalidStatus):
                open_websocket(ws_url, {"X-Worker-Id": worker_id, "X-Worker-Secret": "a guess"})
        log = (tmp_path / "log").read_text()
        assert "refused a worker registration" in log and "'w-forged'" in log and repr(worker) in log, log[-2000:]
        done = run_cell(c, "# %%gpu\nprint(x)", "c2")  # the real worker is still the session's
        assert done[-1]["worker"] == worker and done[-1]["status"] == "ok"
        c.close()
    finally:
        stop_backend(proc)
