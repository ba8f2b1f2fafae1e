"""A throwaway PostgreSQL cluster for the tests: `initdb` + `pg_ctl` from the server's own binaries
(Debian's /usr/lib/postgresql/N/bin, which `make postgres-ready` installs), in a temp dir, on
127.0.0.1 and a free port, stopped and removed at the end."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time


def server_bindir() -> str | None:
    """The newest PostgreSQL server's bin dir, or None where there is no server installed."""
    def version(d: str) -> float:
        try:
            return float(d.rstrip("/").split("/")[-2])
        except ValueError:
            return 0.0

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:  # e.g. a distribution that puts the server on PATH
        candidates.append(os.path.dirname(os.path.realpath(on_path)))
    for d in candidates:
        if all(os.access(os.path.join(d, b), os.X_OK) for b in ("initdb", "pg_ctl", "pg_isready")):
            return d
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, bindir: str):
        self.bin = bindir
        # the server refuses to run as root: as root it runs as `postgres`, which owns its dir
        self.as_user: list[str] = []
        self.owner = None
        if os.geteuid() == 0:
            self.owner = pwd.getpwnam("postgres")  # KeyError: no such user (then the caller skips)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.dir = self.data = self.log = ""
        self.port = 0

    def _run(self, *args: str, timeout: float = 120) -> None:
        r = subprocess.run([*self.as_user, *args], cwd=self.dir, capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, f"{args[0]} failed: {r.stdout}{r.stderr}{self.log_tail()}"

    def log_tail(self) -> str:
        try:
            with open(self.log) as f:
                return "\nserver log:\n" + f.read()[-3000:]
        except OSError:
            return ""

    def start(self) -> "Cluster":
        # not under pytest's tmp dir: its parents are mode 0700 root, which `postgres` cannot enter
        self.dir = tempfile.mkdtemp(prefix="jupyter-gpu-pg-")
        if self.owner is not None:
            os.chown(self.dir, self.owner.pw_uid, self.owner.pw_gid)
        self.data, self.log = os.path.join(self.dir, "data"), os.path.join(self.dir, "server.log")
        self._run(os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "postgres", "-A", "trust",
                  "-E", "UTF8", "--no-sync")
        self.port = _free_port()
        self._start()
        return self

    def _start(self) -> None:
        # fsync off: a test cluster that is thrown away needs no durability, and the disk is shared
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.dir} -F"
        self._run(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-l", self.log, "-o", opts,
                  "start", "-w", "-t", "60")
        self.wait_ready(60)

    def wait_ready(self, timeout: float) -> None:
        """Until pg_isready says the server accepts connections (pg_ctl -w should have seen to it)."""
        deadline = time.monotonic() + timeout
        while True:
            r = subprocess.run([os.path.join(self.bin, "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port),
                                "-t", "5"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
            if r.returncode == 0:
                return
            assert time.monotonic() < deadline, f"PostgreSQL not ready after {timeout} s: {r.stdout}{self.log_tail()}"
            time.sleep(0.1)  # polling another process's readiness: there is no event to wait on

    def restart(self) -> None:
        """Stop it (connections are cut) and start it again on the same port."""
        self.halt()
        self._start()

    def halt(self) -> None:
        """Stop it (connections are cut) until ``resume``: the database unavailable meanwhile."""
        self._run(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "stop", "-m", "fast", "-w", "-t", "60")

    def resume(self) -> None:
        """Start it again after ``halt``, on the same port."""
        self._start()

    def stop(self) -> None:
        try:
            if self.data and os.path.exists(os.path.join(self.data, "postmaster.pid")):
                self._run(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "stop", "-m", "fast", "-w", "-t", "60")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def dsn(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def create_db(self, name: str) -> str:
        """A new empty database; its DSN."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)
