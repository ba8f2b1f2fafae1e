"""Every ``JUPYTER_GPU_*`` environment variable: its default and what it means, in one table.

Kernel, backend and worker read their variables through this table (``settings.KEEP_WARM.get()``),
so a variable exists only once it is here; ``tests/unit/wire/test_settings.py`` fails on a
``JUPYTER_GPU_*`` name in the code or the README that is not.  ``jupyter-gpu serve --help`` and the
README say which command-line option each backend variable stands for.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    meaning: str
    who: str  # which process reads it: kernel, backend, worker, run (jupyter-gpu run), tests

    def get(self, environ=None) -> str | None:
        """Its value in ``environ`` (default: this process's environment), else its default."""
        return (os.environ if environ is None else environ).get(self.name, self.default)

    def __str__(self) -> str:
        return self.name


TABLE: dict[str, Setting] = {}


def _s(name: str, default: str | None, who: str, meaning: str) -> Setting:
    s = TABLE[name] = Setting(name, default, meaning, who)
    return s


# -- where the kernel finds its backend -------------------------------------------------------------
URL = _s("JUPYTER_GPU_URL", None, "kernel, run", "use the backend at this URL instead of the embedded one")
TOKEN = _s("JUPYTER_GPU_TOKEN", "", "kernel, run, backend", "the backend's client token (serve: its --token)")
RUNTIME_DIR = _s("JUPYTER_GPU_RUNTIME_DIR", None, "kernel, backend",
                 "where the embedded backend's runtime file lives (default: Jupyter's runtime dir + jupyter-gpu/)")
EARLY_WORKER = _s("JUPYTER_GPU_EARLY_WORKER", "1", "kernel",
                  "0: an embedded backend a kernel starts does not start a worker for it as it starts (local "
                  "runtime; the first `%%gpu` cell then cold-starts one)")
QUIET_START = _s("JUPYTER_GPU_QUIET_START", None, "worker",
                  "1: the worker imports at a lower priority (_wire/priority.py), on a thread that ends with "
                  "its imports: set by an embedded backend started beside its kernel's own start for its "
                  "early worker (the jupyter-gpu kernelspec), not by a user")
EMBEDDED_GRACE = _s("JUPYTER_GPU_EMBEDDED_GRACE", "10", "backend",
                    "seconds the embedded backend stays after its last client left")
BACKEND_DEADLINE = _s("JUPYTER_GPU_BACKEND_DEADLINE", "30", "kernel, run",
                      "seconds a waiting cell gives a backend that answers nothing, not even the kernel's "
                      "pings, before it fails (a quiet cell on a well backend is never failed)")
CAFILE = _s("JUPYTER_GPU_CAFILE", None, "kernel, run, worker, backend",
            "PEM certificates trusted, besides the system's, for an https:// / wss:// backend (a self-signed "
            "one); serve --cafile sets it for the backend's own workers")

# -- a kernel's `%%gpu` defaults --------------------------------------------------------------------
DEFAULT_GPU = _s("JUPYTER_GPU_DEFAULT_GPU", None, "kernel", "`%%gpu`'s --gpu when a cell gives none (run: the notebook's metadata)")
DEFAULT_IMAGE = _s("JUPYTER_GPU_DEFAULT_IMAGE", None, "kernel", "`%%gpu`'s --image when a cell gives none")
DEFAULT_KEEP_WARM = _s("JUPYTER_GPU_DEFAULT_KEEP_WARM", None, "kernel", "`%%gpu`'s --keep-warm when a cell gives none")
FALLBACK = _s("JUPYTER_GPU_FALLBACK", "", "kernel",
              "GPU types tried after every type a cell asks for (`jupyter-gpu run --gpu-fallback cpu`)")
MAX_RETURN = _s("JUPYTER_GPU_MAX_RETURN", None, "kernel",
                "a value larger than this (e.g. 4GiB, the default) stays on its worker unless --out names it")
SYNC_LIMIT = _s("JUPYTER_GPU_SYNC_LIMIT", "1GiB", "kernel, worker",
                "the most bytes of the notebook's directory synced with a worker on another filesystem "
                "(e.g. 500MB; 0: no limit)")
RUN_BUDGET = _s("JUPYTER_GPU_RUN_BUDGET", None, "kernel", "USD that `jupyter-gpu run --max-cost` left this kernel")
PRICES = _s("JUPYTER_GPU_PRICES", None, "kernel, backend, run",
            "a team's price file (default ~/.jupyter/jupyter-gpu/prices.toml) over the shipped catalog")

# -- the backend ----------------------------------------------------------------------------------
RUNTIME = _s("JUPYTER_GPU_RUNTIME", "local", "backend", "how workers start: local, docker or ray (serve --runtime)")
KEEP_WARM = _s("JUPYTER_GPU_KEEP_WARM", "300", "backend", "seconds an idle lease stays warm (serve --keep-warm)")
MAX_WORKERS = _s("JUPYTER_GPU_MAX_WORKERS", None, "backend", "workers per GPU type; beyond it cells queue (serve --max-workers)")
MIN_WARM = _s("JUPYTER_GPU_MIN_WARM", "0", "backend", "pre-started workers per GPU type (serve --min-warm)")
LEDGER = _s("JUPYTER_GPU_LEDGER", None, "backend",
            "the ledger: a SQLite path or a postgresql:// DSN (serve --ledger; default: Jupyter's data dir)")
LANE = _s("JUPYTER_GPU_LANE", "1", "backend", "0: relay every cell through the backend, no direct lanes (serve --no-lane)")
ZYGOTE = _s("JUPYTER_GPU_ZYGOTE", "1", "backend", "0: the local runtime spawns each worker instead of forking a zygote")
PRELOAD = _s("JUPYTER_GPU_PRELOAD", "numpy,cloudpickle,IPython,matplotlib,torch", "worker",
             "modules the local runtime's zygote imports before forking workers")
EARLY_PRELOAD = _s("JUPYTER_GPU_EARLY_PRELOAD", "numpy,matplotlib", "worker",
                   "modules the early worker of a backend started beside its kernel (the jupyter-gpu "
                   "kernelspec) imports while the kernel still starts, until a first request comes; "
                   "installed ones only")
IMAGE_PRELOAD = _s("JUPYTER_GPU_IMAGE_PRELOAD", "", "worker", "a worker image's `preload` modules, set by its runtime")
DOCKER_BASE = _s("JUPYTER_GPU_DOCKER_BASE", None, "backend", "the docker runtime's base image (default: a public CUDA + Python image)")
DOCKER_IMAGE = _s("JUPYTER_GPU_DOCKER_IMAGE", None, "backend", "a worker image to use as it is, instead of building one")
DOCKER_SHM = _s("JUPYTER_GPU_DOCKER_SHM", "1g", "backend", "each worker container's /dev/shm (Docker's 64 MiB breaks DataLoaders)")
RAY_ADDRESS = _s("JUPYTER_GPU_RAY_ADDRESS", None, "backend", "the Ray cluster (ray://...; default: a local ray.init())")
FILES = _s("JUPYTER_GPU_FILES", "auto", "backend, worker",
           "auto: a worker enters the kernel's directory where it sees it, else it is synced; sync: always "
           "synced (a worker's filesystem is not the kernel's even where a path matches)")
JOB_TTL = _s("JUPYTER_GPU_JOB_TTL", "7d", "backend",
             "how long a spawned call's result is kept after it ends (e.g. 1h, 30m, 7d; serve --job-ttl)")
JOB_DIR = _s("JUPYTER_GPU_JOB_DIR", None, "backend",
             "where spawned calls' results are stored (default: jobs/ beside the SQLite ledger in Jupyter's data dir)")
RAY_CPUS = _s("JUPYTER_GPU_RAY_CPUS", None, "backend", "CPUs of the local Ray cluster the ray runtime starts (default: all, at least 2)")

# -- set by a runtime for the worker it starts --------------------------------------------------------
WORKER_SECRET = _s("JUPYTER_GPU_WORKER_SECRET", "", "worker", "the one-time secret the worker registers with (removed once read)")
WORKER_SECRET_FD = _s("JUPYTER_GPU_WORKER_SECRET_FD", None, "worker",
                      "an inherited file descriptor the worker reads its one-time secret from (never its environment, "
                      "which /proc shows to the same user)")
SANDBOX = _s("JUPYTER_GPU_SANDBOX", None, "worker",
             "the local runtime's per-user sandbox plan (JSON) a spawned worker enters first (jupyter_gpu_worker/sandbox.py)")
WORKER_ID = _s("JUPYTER_GPU_WORKER_ID", None, "worker", "the worker's id, given by its runtime")
IMAGE_SITES = _s("JUPYTER_GPU_IMAGE_SITES", None, "worker",
                 "a built jupyter_gpu.Image's own site-packages, put first on sys.path by its worker (local runtime: "
                 "forked from the default zygote when the image only adds packages)")
WORKER_URL = _s("JUPYTER_GPU_WORKER_URL", None, "backend",
                 "the websocket URL the backend's workers dial (default its own address: ws://HOST:PORT/ws/worker); "
                 "for workers that reach it otherwise (a proxy, another address)")
WORKER_SOCKET = _s("JUPYTER_GPU_WORKER_SOCKET", None, "worker",
                    "a Unix socket the worker dials its backend through instead of TCP (a docker worker under "
                    "--users, which has no network)")
LANE_DIR = _s("JUPYTER_GPU_LANE_DIR", None, "worker", "where a worker that shares the kernels' host opens its lane socket")

# -- the protocol and the tests -------------------------------------------------------------------
STRICT_WIRE = _s("JUPYTER_GPU_STRICT_WIRE", "0", "all",
                 "1: refuse message fields a type's definition lacks instead of ignoring them (the test suite)")


def get(name: str) -> str | None:
    """The value of a variable by name (KeyError for a name not in the table)."""
    return TABLE[name].get()
