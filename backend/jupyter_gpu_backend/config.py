"""Backend settings, from arguments and environment variables."""
from __future__ import annotations

import hashlib
import math
import os
import secrets
from dataclasses import dataclass, field

from jupyter_gpu_backend.runtimes.images import default_images, parse_images
from jupyter_gpu._wire import settings


OWNER = "local"  # the user of the backend's own token (its owner; every user of an embedded backend)


def _env_float(setting: settings.Setting) -> float:
    value = setting.get()
    return float(value) if value else float(setting.default)


@dataclass
class BackendConfig:
    host: str = "127.0.0.1"
    port: int = 0
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    runtime: str = "local"
    keep_warm: float = field(default_factory=lambda: _env_float(settings.KEEP_WARM))
    embedded: bool = False
    idle_grace: float = field(default_factory=lambda: _env_float(settings.EMBEDDED_GRACE))
    runtime_file: str | None = None
    max_payload: int = 16 * 1024**3
    # workers alive at once per GPU type; beyond it cells queue (FIFO) and see their position
    max_workers: int | None = field(default_factory=lambda: int(settings.MAX_WORKERS.get())
                                    if settings.MAX_WORKERS.get() else None)
    worker_start_timeout: float = 120.0
    # per-user caps (scheduling/caps.py; None: none): workers leased, kernel sessions open, cells waiting for a worker
    max_workers_per_user: int | None = None
    max_sessions_per_user: int | None = None
    max_queued_per_user: int | None = None
    # a send to a peer that does not read waits this long, then its connection is dropped (scheduling/model.py: Conn)
    send_timeout: float = 30.0
    # a worker that sends nothing, not even its heartbeat, this long is hung: killed, its cell failed (api/workers.py); 0: never
    worker_heartbeat: float = 60.0
    # bytes of a session's events a kernel has not acknowledged kept to replay when it resumes (model.Session)
    resume_buffer: int = 64 * 1024 * 1024

    # unleased pre-started workers per GPU type (a cold cell takes one: no cold start)
    min_warm: int = field(default_factory=lambda: int(settings.MIN_WARM.get() or 0))
    # one more spare, of this type ("default": the runtime's default), started as the backend starts,
    # before it serves: the embedded backend's, for the cell its kernel is about to send (spares.py)
    early_worker: str | None = None
    quiet_start: bool = False  # --quiet-start: the start's imports at a lower priority (_wire/priority.py)
    # USD limits on known spend (budgets.py); a cell is refused before it starts once reached
    session_budget: float | None = None
    user_budget: float | None = None
    budget_warn: float = 0.8  # warn past this fraction of a limit
    users: dict = field(default_factory=dict)  # token hash -> user name (from --users FILE)
    users_file: str | None = None  # that file, which no worker sees (runtimes' isolate_users)
    config_file: str | None = None  # the --config file, which no worker sees either
    # under --users, a runtime that cannot keep users' workers apart (runtimes' isolate_users) is refused unless this
    insecure_shared_workers: bool = False
    ledger: str | None = field(default_factory=lambda: settings.LEDGER.get())  # None: default
    # warm cells of a kernel on the workers' host go by the worker's direct lane (jupyter_gpu/_wire/lane.py)
    lanes: bool = field(default_factory=lambda: settings.LANE.get() != "0")
    # hybrid pools: GPU type -> always-on dedicated workers (dedicated.py; --dedicated, [pools.X] in --config)
    dedicated: dict = field(default_factory=dict)
    # autoscaling beyond min_warm (autoscale.py): a spare per N cells waiting; spares to keep
    # leased / (leased + spares) under the target
    scale_up_queue: int | None = None
    target_utilisation: float | None = None
    # named worker images ([images.NAME] in --config; images.py): name -> WorkerImage, "default" always there
    images: dict = field(default_factory=default_images)
    # the docker runtime: host directories bind-mounted (read-write, same path) into every worker
    # container, besides the directory of the cell that cold-starts it (runtimes/docker_mounts.py)
    docker_mounts: list = field(default_factory=list)
    # spawned calls (scheduling/jobs.py): how long a result is kept after its call ends; where results are
    job_ttl: float = field(default_factory=lambda: parse_duration(settings.JOB_TTL.get(), settings.JOB_TTL.name))
    job_dir: str | None = field(default_factory=lambda: settings.JOB_DIR.get())
    # TLS (serve --certfile/--keyfile): https:// and wss:// only, the workers too (they trust cafile)
    certfile: str | None = None
    keyfile: str | None = None

    @property
    def token_hash(self) -> str:
        return hash_token(self.token)

    def user_of(self, token: str) -> str | None:
        """The user a token belongs to (tokens are compared by hash), or None."""
        if not token:
            return None
        h = hash_token(token)
        if self.users:  # a team backend: only its users' tokens, never the backend's own (issue 24)
            return self.users.get(h)
        if secrets.compare_digest(h, self.token_hash):
            return OWNER
        return None


def parse_duration(value, what: str = "duration") -> float:
    """Seconds of ``value``: a number, or a number with s, m, h or d ("7d", "30m")."""
    text = str(value).strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(text[-1:], None)
    try:
        seconds = float(text[:-1]) * scale if scale else float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 <= seconds < float("inf"):
        raise ValueError(f"{what}: {value!r} is not a duration (seconds, or e.g. 30m, 12h, 7d)")
    return seconds


def load_users(path: str) -> dict:
    """A JSON file {"alice": "token-a", ...} (keep it mode 0600) -> {token hash: user}."""
    import json

    with open(path) as f:
        entries = json.load(f)
    if not isinstance(entries, dict) or not all(isinstance(v, str) and v for v in entries.values()):
        raise ValueError(f"{path}: expected a JSON object of user name -> non-empty token")
    if OWNER in entries:  # the owner's rights (builds from the host's Dockerfiles) are no user's
        raise ValueError(f"{path}: the user name {OWNER!r} is reserved for the backend's owner; use another")
    return {hash_token(token): user for user, token in entries.items()}


def _runtime(name) -> str:
    from jupyter_gpu_backend.runtimes import RUNTIMES

    if name not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(sorted(RUNTIMES))}, not {name!r}")
    return name


def seconds(value) -> float:
    """A finite number of seconds >= 0 (a setting's, or a flag's text)."""
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"expected a finite number of seconds >= 0, not {value!r}")
    return v


def cap(value) -> int:
    """A per-user cap: a whole number >= 1."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"expected a whole number >= 1, not {value!r}")
    v = int(value)
    if v < 1:
        raise ValueError(f"expected a whole number >= 1, not {value!r}")
    return v


def _paths(value) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(p, str) and os.path.isabs(p) for p in value):
        raise ValueError(f"docker_mounts must be a list of absolute paths, not {value!r}")
    return [os.path.normpath(p) for p in value]


CONFIG_KEYS = {"runtime": _runtime, "keep_warm": seconds, "job_ttl": parse_duration, "min_warm": int, "max_workers": int,
               "scale_up_queue": int, "target_utilisation": float, "worker_start_timeout": seconds,
               "docker_mounts": _paths, "max_workers_per_user": cap, "max_sessions_per_user": cap,
               "max_queued_per_user": cap, "send_timeout": seconds, "worker_heartbeat": seconds, "resume_buffer": cap}


def load_config_file(path: str, config: BackendConfig) -> None:
    """Settings from a TOML file (``jupyter-gpu serve --config FILE``); the command line wins.

    Top-level keys: runtime, keep_warm, job_ttl (e.g. "7d"), min_warm, max_workers, scale_up_queue, target_utilisation,
    worker_start_timeout, max_workers_per_user, max_sessions_per_user, max_queued_per_user, send_timeout, worker_heartbeat (numbers
    checked: seconds finite and >= 0, caps whole and >= 1), docker_mounts (a list of absolute host paths:
    docker's worker containers see them, read-write at the same path, as well as the directory of the
    cell that started them);
    ``[pools.GPU] dedicated = N`` per GPU type; ``[images.NAME]`` worker images (images.py).
    Unknown keys are an error."""
    import tomllib

    with open(path, "rb") as f:
        doc = tomllib.load(f)
    for key, value in doc.items():
        if key == "pools":
            for gpu, entry in value.items():
                unknown = set(entry) - {"dedicated"}
                if unknown or not isinstance(entry.get("dedicated", 0), int) or entry.get("dedicated", 0) < 0:
                    raise ValueError(f"{path}: [pools.{gpu}] takes only dedicated = N (N >= 0)")
                config.dedicated[gpu] = entry.get("dedicated", 0)
        elif key == "images":
            config.images = parse_images(value, path)
        elif key in CONFIG_KEYS:
            try:
                setattr(config, key, CONFIG_KEYS[key](value))
            except (TypeError, ValueError) as e:
                raise ValueError(f"{path}: {key}: {e}") from None
        else:
            raise ValueError(f"{path}: unknown setting {key!r}")


def hash_token(token: str) -> str:
    """Tokens are compared by hash so the plain token is not kept in long-lived structures."""
    return hashlib.sha256(token.encode()).hexdigest()
