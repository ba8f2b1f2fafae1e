"""Backend settings, from arguments and environment variables."""
from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass, field


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


@dataclass
class BackendConfig:
    host: str = "127.0.0.1"
    port: int = 0
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    runtime: str = "local"
    keep_warm: float = field(default_factory=lambda: _env_float("JUPYTER_GPU_KEEP_WARM", 300.0))
    embedded: bool = False
    idle_grace: float = field(default_factory=lambda: _env_float("JUPYTER_GPU_EMBEDDED_GRACE", 10.0))
    runtime_file: str | None = None
    max_payload: int = 16 * 1024**3
    # workers alive at once per GPU type; beyond it cells queue (FIFO) and see their position
    max_workers: int | None = field(default_factory=lambda: int(os.environ["JUPYTER_GPU_MAX_WORKERS"])
                                    if os.environ.get("JUPYTER_GPU_MAX_WORKERS") else None)
    worker_start_timeout: float = 120.0

    @property
    def token_hash(self) -> str:
        return hash_token(self.token)


def hash_token(token: str) -> str:
    """Tokens are compared by hash so the plain token is not kept in long-lived structures."""
    return hashlib.sha256(token.encode()).hexdigest()
