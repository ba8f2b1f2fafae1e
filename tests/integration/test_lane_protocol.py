"""The direct lane at the protocol level, against a real backend and a real worker."""
from __future__ import annotations

import json
import time
import urllib.request

import pytest

from jupyter_gpu._wire import lane, messages
from jupyter_gpu._client.connection import BackendClient

from .backend_process import start_backend, stop_backend
from .test_backend_robustness import run_cell

pytestmark = pytest.mark.timeout(120)
TOKEN = "lane-token"


def _state(url: str, session: str) -> str:
    req = urllib.request.Request(f"{url}/api/status", headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)["sessions"][session]["leases"][0]["state"]


def test_a_resend_by_the_lane_leaves_the_worker_idle_and_its_lease_able_to_expire(tmp_path):
    proc, url = start_backend(tmp_path, "--token", TOKEN)
    try:
        c = BackendClient(url, TOKEN, "s-lane")
        done = run_cell(c, "# %%gpu\nx = 1", "c1", binds=["x"])[-1]
        grant = done["lane"]
        conn = lane.connect(grant["path"], grant["secret"], "s-lane")
        # the kernel counts on a value the worker does not hold: the worker asks for a resend
        conn.send({"type": "execute", "cell": "c2", "code": "# %%gpu\nprint(ghost)", "gpu": "cpu", "inputs": {},
                   "keep": {"ghost": "no-such-hash"}, "binds": [], "session": "s-lane"})
        kinds = []
        while not kinds or kinds[-1] != messages.DONE:
            msg = conn.recv(30)
            assert msg is not None, kinds
            kinds.append(msg.type)
        assert kinds == [messages.RESEND, messages.DONE] and msg.header["status"] == "resend"
        # `started` reached the backend; the resend's `metered` must end it, or the worker stays
        # "busy" and its keep-warm never runs out
        deadline = time.monotonic() + 10
        while _state(url, "s-lane") != "idle":
            assert time.monotonic() < deadline, "the worker still shows busy after a resend by the lane"
            time.sleep(0.02)  # the backend's state of another process: there is no event to wait on
        # and the lane still serves the next cell
        conn.send({"type": "execute", "cell": "c3", "code": "# %%gpu\nprint(x + 1)", "gpu": "cpu", "inputs": {},
                   "keep": {}, "binds": [], "session": "s-lane"})
        out = []
        while True:
            msg = conn.recv(30)
            assert msg is not None
            if msg.type == messages.STREAM:
                out.append(msg.header["text"])
            if msg.type == messages.DONE:
                break
        assert "".join(out) == "2\n" and msg.header["status"] == "ok"
    finally:
        stop_backend(proc)


def _until_done(conn, cell: str) -> tuple[list, dict]:
    """(the text the cell printed, its `done`)."""
    out = []
    while True:
        msg = conn.recv(30)
        assert msg is not None, f"no done for {cell}"
        if msg.header.get("cell") != cell:
            continue
        if msg.type == messages.STREAM:
            out.append(msg.header["text"])
        if msg.type == messages.DONE:
            return out, msg.header


def test_a_stop_for_a_cell_the_worker_has_read_but_not_begun_stops_it_as_it_begins(tmp_path):
    """A stop press can reach the worker between its reader taking a cell and its main thread
    beginning it (a cell sent as its request arrived, early.py, is stopped this way when the kernel
    stops before its magic).  The worker keeps the press: the cell stops as it begins, and runs
    nothing."""
    proc, url = start_backend(tmp_path, "--token", TOKEN)
    try:
        c = BackendClient(url, TOKEN, "s-stop")
        grant = run_cell(c, "# %%gpu\nx = 1", "c1", binds=["x"])[-1]["lane"]
        conn = lane.connect(grant["path"], grant["secret"], "s-stop")

        def execute(cell, code):
            conn.send({"type": "execute", "cell": cell, "code": code, "gpu": "cpu", "inputs": {}, "keep": {},
                       "binds": [], "session": "s-stop"})

        # the main thread is busy with `busy`; `waiting` is read (the reader reads everything at
        # once) and waits its turn when it is stopped
        execute("busy", "# %%gpu\nimport time\nprint('busy began', flush=True)\ntime.sleep(60)")
        msg = conn.recv(30)
        assert msg is not None and msg.header.get("text") == "busy began\n", msg and msg.header
        execute("waiting", "# %%gpu\nprint('waiting ran')")
        conn.send({"type": messages.INTERRUPT, "cell": "waiting"})
        conn.send({"type": messages.INTERRUPT, "cell": "busy"})
        _, busy = _until_done(conn, "busy")
        assert busy["status"] == "interrupted"
        printed, waiting = _until_done(conn, "waiting")
        assert (printed, waiting["status"]) == ([], "interrupted"), (printed, waiting)
        # the worker goes on serving
        execute("after", "# %%gpu\nprint(x + 1)")
        printed, after = _until_done(conn, "after")
        assert (printed, after["status"]) == (["2\n"], "ok")
    finally:
        stop_backend(proc)
