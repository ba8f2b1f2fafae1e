"""One behaviour suite, every runtime: the fixtures that give each test a real kernel talking to a
real backend of one runtime (`local`, `docker`, `ray`).

`runtime` is parametrized and module-scoped: per runtime one backend process (started with
`--runtime NAME`, its own ledger and log, keep-warm long enough that workers stay warm between
tests; a test that wants expiry asks for a short window on its cell), and `kernel` one real
ipykernel (jupyter_client) pointed at it with JUPYTER_GPU_URL/TOKEN, `%load_ext jupyter_gpu` done.
pytest runs all the tests of one runtime before it sets up the next.

A runtime that cannot run here skips its tests, saying why: no Docker Engine (`make docker-ready`
starts one), a worker image that cannot be built, ray not installed.
"""
from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import LiveKernel, make_kernel_env
from jupyter_gpu._wire.shm import pid_alive
from tests.e2e.helpers import LOAD, wait_pid_exit
from tests.integration.backend_process import start_backend, stop_backend

# "local-sync": the local runtime told its workers' filesystem is not the kernel's
# (JUPYTER_GPU_FILES=sync): every test again, with the notebook's directory synced (issue 21)
RUNTIMES = ("local", "docker", "ray", "local-sync")
KEEP_WARM = 600  # seconds: no worker expires between tests; the expiry test asks for 1 s itself


@dataclass
class Runtime:
    """A running backend of one runtime and what the suite needs to know about it."""

    name: str
    url: str
    token: str
    log: Path
    start_method: str  # what a cold cell's footer says ("zygote", "container", "ray actor")
    in_container: bool = False
    synced: bool = False  # its workers get the notebook's directory synced (JUPYTER_GPU_FILES=sync)
    # watch(worker id, pid the cell saw): asserts that worker's process (or container) is there
    # now and returns gone(timeout) -> bool, which waits for its end (its exit / removal event)
    watch: Callable[[str, int], Callable[[float], bool]] = field(default=None)

    def api(self, path: str) -> dict:
        req = urllib.request.Request(f"{self.url}{path}", headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=130) as r:
            return json.load(r)

    def leased_workers(self) -> set[str]:
        return {lease["worker"] for s in self.api("/api/status")["sessions"].values() for lease in s["leases"]}


def _docker(tmp: Path):
    """(backend env, watch, client) for the docker runtime, or pytest.skip saying why it cannot run."""
    docker = pytest.importorskip("docker", reason="the docker SDK is not installed: pip install -e '.[docker]'")
    from jupyter_gpu_backend.runtimes import docker_image
    from jupyter_gpu_backend.runtimes.docker_runtime import RUNTIME_LABEL, WORKER_LABEL

    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:
        pytest.skip(f"no Docker Engine answers ({e}); `make docker-ready` starts one")
    try:
        docker_image.build_base(client, docker_image.LOCAL_BASE)
        docker_image.ensure_worker_image(client, docker_image.LOCAL_BASE)  # the backend then finds it by hash
    except (FileNotFoundError, RuntimeError) as e:  # no debootstrap / no Debian archive
        pytest.skip(f"cannot build the worker image: {e}")

    def watch(worker: str, pid: int):
        """The worker's container, found by its labels (the cell's pid is the container's own)."""
        (container,) = client.containers.list(
            all=True, filters={"label": [f"{RUNTIME_LABEL}=docker", f"{WORKER_LABEL}={worker}"]})
        assert container.status == "running", container.status

        def gone(timeout: float) -> bool:  # Docker's own `removed` event, bounded
            try:
                client.api.wait(container.id, condition="removed", timeout=timeout)
            except docker.errors.NotFound:
                return True  # removed already
            except Exception:  # the wait timed out
                return False
            return True

        return gone

    return {"JUPYTER_GPU_DOCKER_BASE": docker_image.LOCAL_BASE}, watch, client


def _watch_pid(worker: str, pid: int):
    """A worker that is a process of this host (local; ray's actor child on this one-node cluster)."""
    assert pid_alive(pid), f"worker {worker}: no process {pid}"
    return lambda timeout: wait_pid_exit(pid, timeout)  # its exit event (pidfd)


@pytest.fixture(scope="module", params=RUNTIMES)
def runtime(request, tmp_path_factory):
    name, synced = request.param.removesuffix("-sync"), request.param.endswith("-sync")
    d = tmp_path_factory.mktemp(f"runtime-{request.param}")
    env, watch, closing = {}, _watch_pid, None
    if name == "docker":
        env, watch, closing = _docker(d)
    elif name == "ray":
        pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]'): the ray runtime is not exercised")
    token = f"{name}-behaviour-token"
    config = d / "serve.toml"  # a named worker image, to show images behave alike on every runtime
    config.write_text('[images.marked]\nenv = { JUPYTER_GPU_TEST_MARK = "marked" }\npreload = ["json"]\n')
    if synced:
        env["JUPYTER_GPU_FILES"] = "sync"
    proc, url = start_backend(d, "--runtime", name, "--token", token, "--keep-warm", str(KEEP_WARM),
                              "--config", str(config), env=env)
    rt = Runtime(name, url, token, d / "log", start_method={"local": "zygote", "docker": "container",
                                                             "ray": "ray actor"}[name],
                 in_container=name == "docker", watch=watch, synced=synced)
    try:
        # the local runtime forks workers from its zygote once it has imported everything
        # (before that it spawns them): wait for that, so the first cold start is a fork
        info = rt.api("/api/runtime?wait=120")
        assert info["ready"], info
        yield rt
    finally:
        stop_backend(proc)
        if closing is not None:
            closing.close()


@pytest.fixture(scope="module")
def kernel(runtime, tmp_path_factory):
    """One real kernel per runtime, its %%gpu cells served by that runtime's backend."""
    env = make_kernel_env(tmp_path_factory.mktemp(f"kernel-{runtime.name}"))
    env.update(JUPYTER_GPU_URL=runtime.url, JUPYTER_GPU_TOKEN=runtime.token)
    k = LiveKernel(env)
    try:
        k.run(LOAD)
        yield k
    finally:
        k.shutdown()
