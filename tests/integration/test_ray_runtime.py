"""The `ray` runtime on a real local Ray cluster: what only this runtime does.

The behaviour a user notices (streams, displays, errors, names, the stop button, a dying worker,
keep-warm expiry, the footer) is checked on every runtime, ray included, by the shared suite in
tests/runtimes/test_behaviour.py."""
import os

import pytest

from jupyter_gpu.client import BackendClient

from .backend_process import start_backend, stop_backend
from .test_backend_robustness import run_cell

ray = pytest.importorskip("ray", reason="ray is not installed: the ray runtime is not exercised")
pytestmark = pytest.mark.timeout(180)
TOKEN = "ray-token"


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    proc, url = start_backend(tmp_path_factory.mktemp("ray"), "--runtime", "ray", "--token", TOKEN)
    yield url
    stop_backend(proc)


def test_a_worker_is_the_child_of_a_ray_actor_holding_its_resources(backend):
    c = BackendClient(backend, TOKEN, "s-ray")
    assert c.welcome["runtime"] == "ray" and "cpu" in c.welcome["offers"]
    assert c.welcome.get("host_id") is None  # actors may live on other nodes: no shared memory
    code = ("# %%gpu\nimport os\nparent = open(f'/proc/{os.getppid()}/cmdline', 'rb').read()\n"
            "print(os.getpid(), repr(os.environ.get('CUDA_VISIBLE_DEVICES')), b'WorkerActor' in parent)")
    first = run_cell(c, code, "r1")
    assert first[-1]["status"] == "ok" and first[-1]["cold"] is True and first[-1]["start_method"] == "ray actor"
    pid, cuda, in_actor = "".join(e["text"] for e in first if e["type"] == "stream").split()
    # not this process; a cpu worker sees no GPU (Ray gives the actor num_gpus=0); its parent is the actor
    assert int(pid) != os.getpid() and cuda == "''" and in_actor == "True"
    c.close()
