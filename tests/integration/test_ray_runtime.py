"""The `ray` runtime on a real local Ray cluster: what only this runtime does.

The behaviour a user notices (streams, displays, errors, names, the stop button, a dying worker,
keep-warm expiry, the footer) is checked on every runtime, ray included, by the shared suite in
tests/runtimes/test_behaviour.py."""
import os

import pytest

from jupyter_gpu._client.connection import BackendClient

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


def test_a_worker_ray_cannot_place_fails_its_cell_saying_what_it_needs(tmp_path):
    """A local cluster of 1 CPU holds two workers (0.5 CPU each); a third cannot be placed.  Its
    cell fails once the start timeout passes, naming what the actor needs and what is free,
    instead of sitting in "cold start"; the backend keeps serving the others."""
    from jupyter_gpu._wire import messages

    config = tmp_path / "serve.toml"
    config.write_text("worker_start_timeout = 6\n")
    proc, url = start_backend(tmp_path, "--runtime", "ray", "--token", TOKEN, "--config", str(config),
                              env={"JUPYTER_GPU_RAY_CPUS": "1"})
    clients = []
    try:
        for name in ("a", "b"):
            c = BackendClient(url, TOKEN, f"s-{name}")
            clients.append(c)
            assert run_cell(c, "# %%gpu\nx = 1", f"{name}1")[-1]["status"] == "ok"
        third = BackendClient(url, TOKEN, "s-c")
        clients.append(third)
        events = run_cell(third, "# %%gpu\nx = 1", "c1")
        # while it waited, the cell's status line said why (from half the start timeout on)
        said = [e.get("detail", "") for e in events if e["type"] == messages.PHASE and e.get("detail")]
        assert said and said[0].startswith("waiting for Ray to place the worker: it needs 0.5 CPU"), events
        assert "free in the cluster: 0 CPU" in said[0]
        failure = events[-1]
        assert failure["type"] == messages.FAILURE, events
        text = failure["message"]
        assert "within 6 s" in text and "Ray has not placed its actor, which needs 0.5 CPU" in text, text
        assert "free in the cluster now: 0 CPU" in text, text
        # the others are served as before
        assert run_cell(clients[0], "# %%gpu\nprint(x + 1)", "a2")[-1]["status"] == "ok"
    finally:
        for c in clients:
            c.close()
        stop_backend(proc)
