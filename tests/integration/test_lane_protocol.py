"""The direct lane at the protocol level, against a real backend and a real worker."""
from __future__ import annotations

import json
import time
import urllib.request

import pytest

from jupyter_gpu import lane, protocol
from jupyter_gpu.client import BackendClient

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
        while not kinds or kinds[-1] != protocol.DONE:
            msg = conn.recv(30)
            assert msg is not None, kinds
            kinds.append(msg.type)
        assert kinds == [protocol.RESEND, protocol.DONE] and msg.header["status"] == "resend"
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
            if msg.type == protocol.STREAM:
                out.append(msg.header["text"])
            if msg.type == protocol.DONE:
                break
        assert "".join(out) == "2\n" and msg.header["status"] == "ok"
    finally:
        stop_backend(proc)
