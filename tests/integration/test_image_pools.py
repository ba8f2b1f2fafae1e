"""Pools per (GPU type, image): max_workers and the queue count each image's workers apart, and a
session holds one lease per (GPU type, image); an image's `python` is the interpreter of its workers."""
import os
import sys

import pytest

from jupyter_gpu._wire import messages
from jupyter_gpu._client.connection import BackendClient

from .backend_process import start_backend, stop_backend
from .test_backend_robustness import run_cell

pytestmark = pytest.mark.timeout(120)
TOKEN = "image-pools-token"


def phases(events) -> list:
    return [(e["phase"], e.get("position")) for e in events if e["type"] == messages.PHASE]


def test_max_workers_and_the_queue_are_per_gpu_and_image(tmp_path):
    # image a's interpreter: this venv's, through a wrapper that marks the processes it starts
    python = tmp_path / "python-a"
    python.write_text(f"#!/bin/sh\nexport JG_VIA_WRAPPER=yes\nexec {sys.executable} \"$@\"\n")
    os.chmod(python, 0o755)
    cfg = tmp_path / "serve.toml"
    cfg.write_text(f'max_workers = 1\n[images.a]\nenv = {{ JG_IMAGE_MODE = "alpha" }}\npython = "{python}"\n')
    proc, url = start_backend(tmp_path, "--token", TOKEN, "--config", str(cfg), "--keep-warm", "60")
    clients = []
    try:
        one = BackendClient(url, TOKEN, "s-one")
        clients.append(one)
        d = run_cell(one, "# %%gpu\nx = 1", "c1")
        assert d[-1]["status"] == "ok" and d[-1]["image"] == "default"
        # the one cpu slot is held by the default image's worker; image a has a slot of its own
        a = run_cell(one, "# %%gpu\nimport os\nprint(os.environ['JG_IMAGE_MODE'], os.environ.get('JG_VIA_WRAPPER'))",
                     "c2", image="a")
        assert a[-1]["status"] == "ok" and a[-1]["image"] == "a" and a[-1]["worker"] != d[-1]["worker"]
        assert "".join(e.get("text", "") for e in a) == "alpha yes\n"  # its env, its interpreter
        assert ("queued", 1) not in phases(a), phases(a)
        one.send({"type": messages.STATUS})
        status = one.recv(timeout=30).header
        assert sorted((l["image"], l["worker"]) for l in status["leases"]) == sorted(
            [("default", d[-1]["worker"]), ("a", a[-1]["worker"])])

        # a second session's image-a cell waits in a's line (one worker of cpu@a at most) ...
        two = BackendClient(url, TOKEN, "s-two")
        clients.append(two)
        two.send({"type": "execute", "cell": "c3", "code": "# %%gpu\nx = 2", "gpu": "cpu", "image": "a",
                  "inputs": {}, "keep": {}, "binds": []})
        events = []
        while ("queued", 1) not in phases(events):
            msg = two.recv(timeout=30)
            assert msg is not None and msg.type != messages.DONE, events
            events.append(msg.header)
        # ... until s-one lets its workers go
        one.send({"type": messages.RELEASE})
        assert one.recv(timeout=30).header.get("released") == 2
        while events[-1]["type"] != messages.DONE:
            msg = two.recv(timeout=60)
            assert msg is not None, events
            events.append(msg.header)
        done = events[-1]
        assert done["status"] == "ok" and done["image"] == "a" and done["timings"]["queue"] > 0, done
    finally:
        for c in clients:
            c.close()
        stop_backend(proc)
