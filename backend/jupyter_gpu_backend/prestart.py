"""The embedded backend's early worker, spawned before the backend imports the rest of itself.

A kernel starts its embedded backend (``--embedded --runtime-file F --early-worker GPU``) and sends
its first `%%gpu` cell as soon as it is connected: that cell waits for the early worker.  The
backend's imports (asyncio, the scheduler, the runtimes: ~0.15 s here) came before that worker's
spawn, and the worker's own start (~0.19 s) after them.  Here, with nothing heavier than socket and
subprocess imported, the listening socket is bound and the worker spawned first; the local runtime
then takes it as the start of the early spare (``LocalRuntime.claim_prestarted``).

Only for exactly the command line a kernel gives, on the local runtime, for a cpu worker (no NVIDIA
device node here: a GPU worker's devices are the runtime's to assign); anything else starts as
before.  A worker no one claims is killed (``abandon``).
"""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading

from jupyter_gpu._wire import settings
from jupyter_gpu._wire.tcp import keepalive
from jupyter_gpu_backend.private import private_file

# The driver's control node (Linux, containers given GPUs included), or WSL2's GPU paravirtualization
# device: without either, NVML finds no GPU on this host.
NVIDIA_NODES = ("/dev/nvidiactl", "/dev/dxg")

# what a kernel passes (jupyter_gpu/_client/embedded.py), and how many values each takes
EMBEDDED_ARGS = {"--embedded": 0, "--runtime-file": 1, "--early-worker": 1, "--quiet-start": 0}


def nvidia_device_nodes() -> bool:
    """Whether NVML could see a GPU here at all (False on Linux without the driver's device nodes)."""
    return not sys.platform.startswith("linux") or any(os.path.exists(p) for p in NVIDIA_NODES)


def listening_socket(host: str, port: int) -> socket.socket:
    """The backend's listening socket, bound and listening (a client that comes before the server
    serves waits in its backlog)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted sockets inherit this: without it two small events in a row (result, done)
    # meet Nagle + delayed ACK and the second waits ~40 ms
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    keepalive(sock)  # dead peers are found by TCP keepalive, not websocket pings
    sock.bind((host, port))
    sock.listen(512)
    return sock


def secret_pipe(secret: str) -> int:
    """The read end of a pipe holding ``secret``, for a worker to inherit: never its environment,
    which /proc/PID/environ shows to its user."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, secret.encode() + b"\n")
    os.close(write_fd)
    return read_fd


def process_env(env: dict, worker_id: str, read_fd: int, sandbox: str | None = None) -> dict:
    """A spawned worker's whole environment: the backend's, ``env`` (its image's, its devices'), its
    id and the descriptor of its secret; never a secret itself."""
    full = {**os.environ, **env, settings.WORKER_SECRET_FD.name: str(read_fd), settings.WORKER_ID.name: worker_id}
    full.pop(settings.WORKER_SECRET.name, None)
    if sandbox is not None:
        full[settings.SANDBOX.name] = sandbox
    full.setdefault("PYTHONUNBUFFERED", "1")
    return full


def worker_command(python: str | None, worker_url: str) -> list:
    return [python or sys.executable, "-m", "jupyter_gpu_worker", "--url", worker_url]


def new_identity() -> tuple[str, str]:
    """(id, one-time registration secret) of a worker about to start: made here for every worker."""
    return f"w-{secrets.token_hex(4)}", secrets.token_urlsafe(24)


def local_env(image_env: dict, visible: str, lane_dir: str | None) -> dict:
    """A local worker's own variables: its image's; the GPUs it sees (``visible``, its
    CUDA_VISIBLE_DEVICES: "" for none, a cpu worker); and the private directory its direct lane
    socket lives in (None: a sandboxed worker, whose lane is not there)."""
    env = {**image_env, "CUDA_VISIBLE_DEVICES": visible}
    if lane_dir is not None:
        env[settings.LANE_DIR.name] = lane_dir
    return env


class Prestarted:
    """A cpu worker spawned before the backend's imports, and the socket it will dial."""

    gpu = "cpu"

    def __init__(self, sock: socket.socket, worker_url: str, quiet: bool = False):
        """``quiet``: the worker imports at a lower priority (--quiet-start: a start beside a kernel's)."""
        self.sock = sock
        self.worker_id, self.secret = new_identity()
        self.log_dir = tempfile.mkdtemp(prefix="jupyter-gpu-workers-")  # (the local runtime's: 0700)
        self.log_path = os.path.join(self.log_dir, f"{self.worker_id}.log")
        self.claimed = False
        env = local_env({}, "", self.log_dir)  # the default image's (no variables: claim_prestarted checks)
        if quiet:
            env[settings.QUIET_START.name] = "1"
        read_fd = secret_pipe(self.secret)
        try:
            with private_file(self.log_path, "wb") as out:
                self.proc = subprocess.Popen(
                    worker_command(None, worker_url), env=process_env(env, self.worker_id, read_fd),
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                    pass_fds=(read_fd,))
        finally:
            os.close(read_fd)

    def exited(self, loop):
        """A future of ``loop`` that resolves to the worker's exit code (< 0: a signal)."""
        fut = loop.create_future()

        def wait() -> None:
            code = self.proc.wait()
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(code))

        threading.Thread(target=wait, name=f"wait-{self.worker_id}", daemon=True).start()
        return fut

    def abandon(self) -> None:
        """Nobody took it (the backend did not start, or took another way): it goes."""
        if not self.claimed and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()


def early_worker(argv: list) -> Prestarted | None:
    """A Prestarted when ``argv`` is exactly a kernel's embedded backend asking for a cpu (or
    default, with no GPU here) early worker on the local runtime; else None."""
    seen: dict = {}
    i = 0
    while i < len(argv):
        flag = argv[i]
        n = EMBEDDED_ARGS.get(flag)
        if n is None or flag in seen or (n and i + 1 >= len(argv)):
            return None
        seen[flag] = argv[i + 1] if n else True
        i += 1 + n
    if "--embedded" not in seen or seen.get("--early-worker") not in ("default", "cpu"):
        return None
    if (settings.RUNTIME.get() or "local") != "local" or nvidia_device_nodes():
        return None
    sock = listening_socket("127.0.0.1", 0)
    worker_url = settings.WORKER_URL.get() or f"ws://127.0.0.1:{sock.getsockname()[1]}/ws/worker"
    try:
        return Prestarted(sock, worker_url, quiet="--quiet-start" in seen)
    except OSError:
        sock.close()
        return None
