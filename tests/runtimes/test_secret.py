"""Issue 24, finding 2, on every runtime: a worker's one-time registration secret never is in its
environment (the zygote's pipe, an inherited descriptor, a container's stdin): /proc/PID/environ
shows a process's to its user, `docker inspect` a container's to whoever reaches the engine."""
from __future__ import annotations

import pytest

SECRET = b"JUPYTER_GPU_WORKER_SECRET="


def test_the_registration_secret_is_not_in_the_workers_environment(kernel, runtime):
    cell = kernel.run("%%gpu\nimport os\nprint(os.getpid(), 'JUPYTER_GPU_WORKER_SECRET' in os.environ)")
    pid, in_environ = cell.stdout().split()
    assert in_environ == "False"  # not even in what the process sees of its own
    worker = cell.footers()[-1]["worker"]
    if runtime.in_container:
        docker = pytest.importorskip("docker")
        from jupyter_gpu_backend.runtimes.docker_runtime import WORKER_LABEL

        (container,) = docker.from_env().containers.list(filters={"label": f"{WORKER_LABEL}={worker}"})
        env = container.attrs["Config"]["Env"] or []
        assert not any(e.startswith(SECRET.decode()) for e in env), env
    else:  # a process of this host (local; ray's actor child on this one-node cluster)
        with open(f"/proc/{pid}/environ", "rb") as f:
            assert SECRET not in f.read()
