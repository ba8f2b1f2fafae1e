"""The `ray` runtime on a real local Ray cluster: the same worker behaviour as the local runtime."""
import os

import pytest

from jupyter_gpu import protocol
from jupyter_gpu.client import BackendClient

from .backend_process import start_backend, stop_backend
from .test_backend_robustness import interrupt_a_long_sleep, run_cell

ray = pytest.importorskip("ray", reason="ray is not installed: the ray runtime is not exercised")
pytestmark = pytest.mark.timeout(180)
TOKEN = "ray-token"


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    proc, url = start_backend(tmp_path_factory.mktemp("ray"), "--runtime", "ray", "--token", TOKEN)
    yield url
    stop_backend(proc)


def streams(events):
    return "".join(e["text"] for e in events if e["type"] == protocol.STREAM)


def test_cells_run_in_a_ray_actor_child_with_the_usual_behaviour(backend):
    c = BackendClient(backend, TOKEN, "s-ray")
    assert c.welcome["runtime"] == "ray" and "cpu" in c.welcome["offers"]
    first = run_cell(c, "# %%gpu\nimport os\nkept = 41\nprint(os.getpid(), repr(os.environ.get('CUDA_VISIBLE_DEVICES')))",
                     "r1", binds=["kept"])
    assert first[-1]["status"] == "ok" and first[-1]["cold"] is True
    pid, cuda = streams(first).split()
    assert int(pid) != os.getpid() and cuda == "''"  # a cpu worker sees no GPU

    again = run_cell(c, "# %%gpu\nprint(kept + 1)", "r2")
    assert streams(again) == "42\n" and again[-1]["cold"] is False  # same warm worker, same namespace

    err = run_cell(c, "# %%gpu\nx = 1\n1 / 0", "r3")
    e = next(x for x in err if x["type"] == protocol.ERROR and "ename" in x)
    assert e["ename"] == "ZeroDivisionError" and err[-1]["status"] == "error"

    # interrupt: the remote code stops, the worker stays warm with its namespace
    assert interrupt_a_long_sleep(c, "r4")["status"] == "interrupted"
    assert streams(run_cell(c, "# %%gpu\nprint(kept)", "r5")) == "41\n"

    # a crash fails only its cell, with the cause; the next cell gets a new worker
    crash = run_cell(c, "# %%gpu\nimport os\nos._exit(3)", "r6")
    assert crash[-1]["status"] == "lost" and "exited with code 3" in next(
        x["evalue"] for x in crash if x["type"] == protocol.ERROR)
    assert run_cell(c, "# %%gpu\nx = 1", "r7")[-1]["cold"] is True
    c.close()
