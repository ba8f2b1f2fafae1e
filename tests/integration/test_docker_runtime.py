"""The `docker` runtime against a real dockerd: what only this runtime does - workers in containers
of the worker image (built from a local debootstrap base: no registry is reachable here), found by
their labels, removed when they end, the image rebuilt only when its inputs change.

The behaviour a user notices (streams, displays, errors, names, the stop button, a dying worker and
its container, keep-warm expiry, the footer) is checked on every runtime, docker included, by the
shared suite in tests/runtimes/test_behaviour.py.

`make test` installs and starts dockerd and builds the images first (`make docker-ready`); where no
engine can run, these tests skip and say why.
"""
import contextlib
import os

import pytest

from jupyter_gpu._wire import messages
from jupyter_gpu._client.connection import BackendClient

from .backend_process import start_backend, stop_backend
from .test_backend_robustness import run_cell

docker = pytest.importorskip("docker", reason="the docker SDK is not installed: pip install -e '.[docker]'")
pytestmark = pytest.mark.timeout(600)  # a first run builds the base image (debootstrap, ~1-2 min)
TOKEN = "docker-token"

from jupyter_gpu_backend.runtimes import docker_image  # noqa: E402
from jupyter_gpu_backend.runtimes.docker_runtime import RUNTIME_LABEL, WORKER_LABEL  # noqa: E402


def _engine():
    try:
        client = docker.from_env()
        client.ping()
        return client, None
    except Exception as e:
        return None, f"no Docker Engine answers ({e}); `make docker-ready` starts one"


@pytest.fixture(scope="module")
def client():
    c, why = _engine()
    if c is None:
        pytest.skip(why)
    yield c
    c.close()


@pytest.fixture(scope="module")
def image(client):
    """(tag, built now) of the worker image on the local base; builds what is missing."""
    try:
        docker_image.build_base(client, docker_image.LOCAL_BASE)
    except (FileNotFoundError, RuntimeError) as e:  # no debootstrap / no Debian archive
        pytest.skip(f"cannot build the local base image: {e}")
    return docker_image.ensure_worker_image(client, docker_image.LOCAL_BASE)


@contextlib.contextmanager
def environ(**values):
    """Set variables for a backend process started inside the block (it inherits os.environ)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def backend(tmp_path_factory, image, client):
    d = tmp_path_factory.mktemp("docker")
    with environ(JUPYTER_GPU_DOCKER_BASE=docker_image.LOCAL_BASE):  # the backend finds the image itself
        proc, url = start_backend(d, "--runtime", "docker", "--token", TOKEN, "--keep-warm", "600")
    yield url, d / "log"
    stop_backend(proc)


def streams(events):
    return "".join(e["text"] for e in events if e["type"] == messages.STREAM)


def worker_containers(client, worker_id):
    return client.containers.list(all=True, filters={"label": [f"{RUNTIME_LABEL}=docker", f"{WORKER_LABEL}={worker_id}"]})


def test_a_worker_is_an_unprivileged_container_on_the_host_network(backend, client):
    url, _ = backend
    c = BackendClient(url, TOKEN, "s-docker")
    assert c.welcome["runtime"] == "docker" and "cpu" in c.welcome["offers"]
    assert c.welcome.get("host_id") is None  # a container's /dev/shm is its own: no shared memory
    code = ("# %%gpu\nimport os\n"
            "print(os.path.exists('/.dockerenv'), os.getuid(), repr(os.environ.get('CUDA_VISIBLE_DEVICES')))")
    first = run_cell(c, code, "d1")
    assert first[-1]["status"] == "ok" and first[-1]["cold"] is True and first[-1]["start_method"] == "container"
    assert streams(first) == "True 1000 ''\n"  # in a container, unprivileged, no GPU
    # found by its labels, running, with host networking (it dials the backend on 127.0.0.1)
    (container,) = worker_containers(client, first[-1]["worker"])
    assert container.status == "running" and container.attrs["HostConfig"]["NetworkMode"] == "host"
    c.close()


def test_the_image_is_not_rebuilt_when_its_inputs_are_unchanged(image, backend, client):
    _, log = backend
    assert f"building the worker image {image[0]}" not in log.read_text()  # the backend found it by its hash
    # (built again first if someone edited the source since the fixture ran: the tag follows it)
    tag, _ = docker_image.ensure_worker_image(client, docker_image.LOCAL_BASE, log=lambda m: None)
    before = client.images.get(tag).id
    again, built = docker_image.ensure_worker_image(client, docker_image.LOCAL_BASE, log=lambda m: None)
    assert (again, built) == (tag, False) and client.images.get(tag).id == before
    # and the tag does follow every input
    dockerfile = docker_image.dockerfile_path().read_bytes()
    sources = [(rel, f.read_bytes()) for rel, f in docker_image.source_files()]
    base = client.images.get(docker_image.LOCAL_BASE).id
    wheels = ["numpy-2.whl"]
    h = docker_image.inputs_hash(dockerfile, docker_image.LOCAL_BASE, base, wheels, sources)
    assert h == docker_image.inputs_hash(dockerfile, docker_image.LOCAL_BASE, base, wheels, list(reversed(sources)))
    changed = [(sources[0][0], sources[0][1] + b"\n")] + sources[1:]
    for other in (docker_image.inputs_hash(dockerfile + b"\n", docker_image.LOCAL_BASE, base, wheels, sources),
                  docker_image.inputs_hash(dockerfile, docker_image.LOCAL_BASE, base, ["numpy-3.whl"], sources),
                  docker_image.inputs_hash(dockerfile, docker_image.LOCAL_BASE, "sha256:other", wheels, sources),
                  docker_image.inputs_hash(dockerfile, docker_image.LOCAL_BASE, base, wheels, changed)):
        assert other != h


def test_the_backend_leaves_no_container_behind(tmp_path, image, client):
    with environ(JUPYTER_GPU_DOCKER_IMAGE=image[0]):  # an image named outright is used as it is
        proc, url = start_backend(tmp_path, "--runtime", "docker", "--token", TOKEN)
    try:
        c = BackendClient(url, TOKEN, "s-leave")
        done = run_cell(c, "# %%gpu\nx = 1", "l1")
        worker = done[-1]["worker"]
        assert len(worker_containers(client, worker)) == 1
        c.close()
    finally:
        stop_backend(proc)
    assert worker_containers(client, worker) == []


def test_a_container_that_cannot_start_fails_its_cell_with_dockers_reason(tmp_path, image, client):
    # the bare base image has no `python` and no agent: the container's init cannot run the command
    with environ(JUPYTER_GPU_DOCKER_IMAGE=docker_image.LOCAL_BASE):
        proc, url = start_backend(tmp_path, "--runtime", "docker", "--token", TOKEN)
    try:
        c = BackendClient(url, TOKEN, "s-broken")
        for cell in ("b1", "b2"):  # the backend keeps serving after the first failure
            events = run_cell(c, "# %%gpu\nx = 1", cell)
            assert events[-1]["type"] == messages.FAILURE, events
            assert "worker for cpu exited before registering" in events[-1]["message"]
            assert "exec python failed" in events[-1]["message"]  # the container's log tail says why
        c.close()
        # its exit removed the container
        ours = client.containers.list(all=True, filters={"label": f"{RUNTIME_LABEL}=docker"})
        assert [x for x in ours if x.attrs["Config"]["Image"] == docker_image.LOCAL_BASE] == []
    finally:
        stop_backend(proc)


def test_named_images_get_their_own_env_and_base_and_containers(tmp_path, image, client):
    cfg = tmp_path / "serve.toml"
    cfg.write_text('[images.a]\nenv = { JG_IMAGE_MODE = "alpha" }\npreload = ["colorsys"]\n'
                   f'[images.b]\nenv = {{ JG_IMAGE_MODE = "beta" }}\nbase = "{docker_image.LOCAL_BASE}"\n')
    # the default image named outright; b is built on its base, which gives the same inputs: no build
    with environ(JUPYTER_GPU_DOCKER_IMAGE=image[0], JUPYTER_GPU_DOCKER_BASE=docker_image.LOCAL_BASE):
        proc, url = start_backend(tmp_path, "--runtime", "docker", "--token", TOKEN, "--config", str(cfg))
    try:
        c = BackendClient(url, TOKEN, "s-images")
        assert c.welcome["images"] == ["a", "b", "default"]
        code = "# %%gpu\nimport os, sys\nprint(os.environ.get('JG_IMAGE_MODE'), 'colorsys' in sys.modules)"
        runs = {i: run_cell(c, code, f"i-{i}", image=i)[-1] for i in ("a", "b", "default")}
        assert all(d["status"] == "ok" and d["image"] == i for i, d in runs.items()), runs
        assert len({d["worker"] for d in runs.values()}) == 3  # a container per image
        again = run_cell(c, code, "i-a2", image="a")
        assert again[-1]["worker"] == runs["a"]["worker"] and again[-1]["cold"] is False
        assert streams(again) == "alpha True\n"  # its env, and its preload imported at worker start
        (container,) = worker_containers(client, runs["b"]["worker"])
        assert "JG_IMAGE_MODE=beta" in container.attrs["Config"]["Env"] and container.image.tags == [image[0]]
        failed = run_cell(c, code, "i-x", image="nope")[-1]
        assert failed["code"] == "no_image" and "a, b, default" in failed["message"]
        c.close()
    finally:
        stop_backend(proc)


@pytest.mark.gpu
def test_a_gpu_worker_gets_exactly_one_real_gpu(backend):
    from jupyter_gpu_backend.runtimes.local import detect_gpus

    gpus = detect_gpus()
    if not gpus:
        pytest.skip("no NVIDIA GPU on this machine (NVML finds none): the device request is not exercised")
    gpu = sorted(gpus)[0]
    url, _ = backend
    c = BackendClient(url, TOKEN, "s-gpu")
    done = run_cell(c, "# %%gpu\nprint('ok')", "g1", gpu=gpu)
    assert done[-1]["status"] == "ok" and done[-1]["gpu"] == gpu and done[-1]["device"] != "cpu"
    c.close()
