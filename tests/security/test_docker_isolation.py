"""Issue 24: the docker runtime under --users.  A container has its own processes, mounts and
/dev/shm; here it also has no network: its worker reaches the backend through a Unix socket
mounted read-only into it, and a cell reaches nothing else - not the backend's TCP port, not any
other loopback-only service of the GPU host (finding 10: docker workers used the host's network)."""
from __future__ import annotations

import json
import socket
import threading

import pytest

from jupyter_gpu._wire import messages
from tests.integration.backend_process import start_backend, stop_backend

from .cells import TOKENS, client, until
from .test_sandbox import run

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def docker_team(tmp_path_factory):
    docker = pytest.importorskip("docker", reason="the docker SDK is not installed")
    from jupyter_gpu_backend.runtimes import docker_image

    try:
        docker.from_env().ping()
    except Exception as e:
        pytest.skip(f"no Docker Engine answers ({e}); `make docker-ready` starts one")
    d = tmp_path_factory.mktemp("docker-team")
    users = d / "users.json"
    users.write_text(json.dumps(TOKENS))
    users.chmod(0o600)
    proc, url = start_backend(d, "--users", str(users), "--runtime", "docker",
                              env={"JUPYTER_GPU_DOCKER_BASE": docker_image.LOCAL_BASE})
    yield url
    stop_backend(proc)


def test_a_users_container_reaches_the_backend_and_nothing_else(docker_team):
    url = docker_team
    port = int(url.rsplit(":", 1)[1])
    # a loopback-only service of the GPU host that needs no credentials
    service = socket.socket()
    service.bind(("127.0.0.1", 0))
    service.listen(1)
    reached = threading.Event()
    threading.Thread(target=lambda: (service.accept(), reached.set()), daemon=True).start()
    alice = client(url, "alice", "s-dk-1")
    out, done = run(alice, "c1", "import socket, os\n"
                    "def tcp(port):\n    s = socket.socket()\n    s.settimeout(3)\n    try:\n"
                    "        s.connect(('127.0.0.1', port))\n        return 'reached'\n"
                    "    except OSError as e:\n        return type(e).__name__\n"
                    f"print(tcp({port}), tcp({service.getsockname()[1]}))\n"
                    "print(sorted(n for n in os.listdir('/sys/class/net')))")
    assert done["start_method"] == "container"
    first, nets = out.splitlines()
    assert "reached" not in first, first  # neither the backend's port nor the host's service
    assert nets == "['lo']", nets  # no interface but its own loopback
    assert not reached.is_set()
    # and it still works as a worker: warm cells, values back
    out, _ = run(alice, "c2", "x = 21 * 2\nprint(x)")
    assert out == "42\n"
    alice.send({"type": messages.RELEASE})
    until(alice, messages.STATUS_REPLY)
    alice.close()
    service.close()
