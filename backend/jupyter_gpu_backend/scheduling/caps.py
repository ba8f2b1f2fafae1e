"""Per-user caps: how much of a shared backend one user may hold at once.

``--max-sessions-per-user`` (kernel sessions open), ``--max-workers-per-user`` (workers leased by
the user's sessions, spawned calls' included, plus those being leased now) and
``--max-queued-per-user`` (cells waiting for a worker: in the line, or while one cold-starts; a
waiting cell holds its inputs in the backend's memory).  None: no cap.  Past a cap the request is
refused at once with ``UserLimitReached`` naming the cap - never queued, so one user cannot fill
the line or the host.  The counts are kept here or read off the sessions; each check costs a
dictionary lookup, or (workers) a walk of the sessions on a cold start only.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from jupyter_gpu.errors import UserLimitReached


@dataclass
class UserCaps:
    workers: int | None = None
    sessions: int | None = None
    queued: int | None = None
    leasing: dict = field(default_factory=dict)  # user -> workers being leased now (started, taken)
    waiting: dict = field(default_factory=dict)  # user -> cells waiting for a worker

    def check_session(self, sessions, user: str) -> None:
        """Before a new kernel session of ``user`` opens (``sessions``: the backend's)."""
        if self.sessions is None:
            return
        n = sum(1 for s in sessions if s.user == user and s.kernel)
        if n >= self.sessions:
            raise UserLimitReached(f"user {user} has {n} sessions open, the most --max-sessions-per-user allows")

    @contextlib.contextmanager
    def new_worker(self, sessions, user: str):
        """Around leasing ``user`` one more worker: refused past the cap, counted while it starts."""
        if self.workers is not None:
            n = sum(len(s.leases) for s in sessions if s.user == user) + self.leasing.get(user, 0)
            if n >= self.workers:
                raise UserLimitReached(
                    f"user {user} has {n} workers, the most --max-workers-per-user allows; give one back "
                    "(%gpu release in a notebook that holds one) or wait until one's keep-warm runs out")
        self.leasing[user] = self.leasing.get(user, 0) + 1
        try:
            yield
        finally:
            self.leasing[user] -= 1

    def wait(self, user: str) -> None:
        """A cell of ``user`` begins to wait for a worker (``done_waiting`` when it stops)."""
        n = self.waiting.get(user, 0)
        if self.queued is not None and n >= self.queued:
            raise UserLimitReached(f"user {user} has {n} cells waiting for a worker, the most "
                                   "--max-queued-per-user allows; this cell was not queued")
        self.waiting[user] = n + 1

    def done_waiting(self, user: str) -> None:
        self.waiting[user] = max(0, self.waiting.get(user, 0) - 1)

    def status(self) -> dict:
        return {"max_workers_per_user": self.workers, "max_sessions_per_user": self.sessions,
                "max_queued_per_user": self.queued}
