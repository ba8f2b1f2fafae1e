"""Issue 24, finding 8: eight bytes written to a worker's lane socket froze it (the worker read the
frame they began, whole, before anything else).  Whoever can reach the socket without its secret -
under --users nobody: there is no lane, and the sandbox hides the directory - now costs the worker
at most the hello's timeout, and the backend's next cell runs."""
from __future__ import annotations

import socket
import struct

import pytest

from jupyter_gpu._client.connection import BackendClient
from tests.integration.backend_process import start_backend, stop_backend
from tests.integration.test_backend_robustness import run_cell

pytestmark = pytest.mark.timeout(120)
TOKEN = "lane-socket-token"


def test_a_part_of_a_frame_on_the_lane_socket_does_not_freeze_the_worker(tmp_path):
    proc, url = start_backend(tmp_path, "--token", TOKEN)
    try:
        c = BackendClient(url, TOKEN, "s-lane-attack")
        grant = run_cell(c, "# %%gpu\nx = 1", "c1")[-1]["lane"]
        intruder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        intruder.connect(grant["path"])
        intruder.sendall(struct.pack("<Q", 1000) + b"abcd")  # a frame of 1000 bytes begins; 4 of them come
        # the worker is not held: the next cell (through the backend) runs
        done = run_cell(c, "# %%gpu\nprint(x + 1)", "c2")
        assert done[-1]["status"] == "ok", done
        assert next(e["text"] for e in done if e["type"] == "stream") == "2\n"
        intruder.close()
        c.close()
    finally:
        stop_backend(proc)
