"""Run the backend: `jupyter-gpu serve`, or embedded (started by the first kernel that needs it).

The embedded backend writes a runtime file (URL, token, pid; mode 0600) the way Jupyter writes
``jpserver-*.json``, and exits once its last client has been gone for ``idle_grace`` seconds,
taking its workers with it.

uvicorn and the app (starlette, the doors) are imported in ``serve``, on a thread, once the runtime
has been told to start the workers wanted at once (``--early-worker``, ``--min-warm``, dedicated): a
worker's start (~0.2 s) then overlaps those imports (~0.1 s) instead of following them.  The socket
is bound and listening from the start, so a client that connects meanwhile waits in its backlog.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import json
import logging
import os
import signal
import socket
import sys
import time


from jupyter_gpu_backend.prestart import Prestarted, listening_socket
from jupyter_gpu_backend.config import BackendConfig, cap, load_config_file, load_users, parse_duration, seconds
from jupyter_gpu_backend.scheduling.dedicated import parse_sizes
from jupyter_gpu_backend.accounting.ledger import Ledger
from jupyter_gpu_backend.accounting.ledger import default_path as default_ledger_path
from jupyter_gpu_backend.runtimes.images import check_for_runtime
from jupyter_gpu_backend.runtimes import RUNTIMES, make_runtime
from jupyter_gpu_backend.scheduling.caps import UserCaps
from jupyter_gpu_backend.scheduling.scheduler import Scheduler
from jupyter_gpu._wire import settings
from jupyter_gpu._wire.priority import run_lowered
from jupyter_gpu.errors import NoSuchDevice

log = logging.getLogger("jupyter_gpu_backend")


def write_runtime_file(path: str, info: dict) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    os.replace(tmp, path)  # readers never see a half-written file


def remove_runtime_file(path: str) -> None:
    try:
        with open(path) as f:
            if json.load(f).get("pid") != os.getpid():
                return  # another backend has taken over the file
        os.unlink(path)
    except (OSError, ValueError):
        pass


def _uvicorn(on_stop, config):
    """uvicorn's server, telling the scheduler it stops *before* uvicorn closes the connections:
    a worker whose socket uvicorn closes is then not taken for a dead spare and replaced (a
    replacement started mid-shutdown could not register, and wrote a ledger row, under load)."""
    import uvicorn

    class _Server(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            on_stop()
            await super().shutdown(sockets=sockets)

    return _Server(config)


class BackendServer:
    def __init__(self, config: BackendConfig, prestarted: Prestarted | None = None):
        """``prestarted``: the embedded backend's early worker, spawned with the socket it dials
        before this module was imported (prestart.py): the local runtime takes it."""
        self.config = config
        self.unix_sock: socket.socket | None = None  # for workers without network (_worker_socket)
        if prestarted is not None and (config.runtime != "local" or (config.host, config.port) != ("127.0.0.1", 0)):
            prestarted.abandon()  # (not what it was spawned for)
            prestarted = None
        self.sock = prestarted.sock if prestarted else listening_socket(config.host, config.port)
        self.port = self.sock.getsockname()[1]
        tls = bool(config.certfile)
        self.url = f"{'https' if tls else 'http'}://{config.host}:{self.port}"
        check_for_runtime(config.images, config.runtime)  # e.g. `python` for docker: refused, naming the key
        worker_url = settings.WORKER_URL.get() or f"{'wss' if tls else 'ws'}://{config.host}:{self.port}/ws/worker"
        runtime = make_runtime(config.runtime, worker_url, config.images,
                               docker_mounts=config.docker_mounts, prestarted=prestarted)
        if config.users:
            self._isolate(runtime)
        self.ledger = Ledger(config.ledger or default_ledger_path())
        if any(self.ledger.recovered.values()):
            log.warning("ledger %s: in flight at the last stop, now recorded as lost: %s",
                        self.ledger.where, self.ledger.recovered)
        self.scheduler = Scheduler(runtime, config.keep_warm, config.worker_start_timeout, config.max_workers,
                                   self.ledger, config.min_warm, lanes=config.lanes, dedicated=config.dedicated,
                                   scale_up_queue=config.scale_up_queue, target_utilisation=config.target_utilisation,
                                   images=config.images, caps=UserCaps(config.max_workers_per_user,
                                                                       config.max_sessions_per_user,
                                                                       config.max_queued_per_user))
        self.scheduler.heartbeat = config.worker_heartbeat
        self.scheduler.dedicated.check(runtime.offers())  # a dedicated size for a type not offered: refused
        self.app = self.kernels = self.uvicorn = None  # (_build: in serve)

    def _build(self) -> None:
        """The app and uvicorn's server (their imports: ~0.1 s of the backend's start)."""
        import uvicorn

        from jupyter_gpu_backend.api.app import create_app
        from jupyter_gpu_backend.api.frames import MAX_FRAME

        try:  # large payload frames without the protocol object's copies (wsfast.py)
            from jupyter_gpu_backend.api.wsfast import FastFrames as ws
        except ImportError:  # (a uvicorn without its sans-I/O websocket protocol)
            ws = "auto"
        config = self.config
        self.app, self.kernels = create_app(config, self.scheduler)
        self.uvicorn = _uvicorn(
            self.scheduler.stopping,
            uvicorn.Config(
                self.app,
                log_level="warning",
                ssl_certfile=config.certfile,
                ssl_keyfile=config.keyfile,
                # no frame of ours is larger (frames.py): a bigger one is refused (1009) before it is read
                ws_max_size=MAX_FRAME,
                ws_per_message_deflate=False,
                ws=ws,
                # no pings: a kernel reads only while a cell runs and could not answer them
                ws_ping_interval=None,
                lifespan="on",
                # workers hold websockets open: never wait on them for long when asked to stop
                timeout_graceful_shutdown=3,
            )
        )

    def _isolate(self, runtime) -> None:
        """Under --users: each user's workers out of the others' reach and of the backend's state
        (the local runtime's sandbox), or, where the runtime cannot, a refusal unless the operator
        said --insecure-shared-workers.  No lanes: every cell passes the backend (which meters it)."""
        from jupyter_gpu_backend.runtimes.docker_mounts import state_dirs

        config = self.config
        config.lanes = False
        state = [*state_dirs(), *(os.path.dirname(os.path.abspath(p)) for p in (config.ledger, config.job_dir) if p)]
        why = runtime.isolate_users(sorted(set(config.users.values())), hide=state,
                                    blank=[p for p in (config.users_file, config.config_file) if p])
        if why is None:
            if hasattr(runtime, "worker_socket"):  # docker: its containers dial this socket, having no network
                runtime.worker_socket = self._worker_socket()
            return
        if not config.insecure_shared_workers:
            raise ValueError(f"--users on the {config.runtime} runtime: {why}. Say --insecure-shared-workers to "
                             "serve several users on it anyway")
        log.warning("--users on the %s runtime with --insecure-shared-workers: %s", config.runtime, why)

    def _worker_socket(self) -> str:
        """A Unix socket this server also serves on, for workers without network: alone in its
        directory (which their containers mount read-only), open to their user (the registration
        secret is what lets a worker in)."""
        import tempfile

        d = tempfile.mkdtemp(prefix="jupyter-gpu-workers-socket-")
        os.chmod(d, 0o755)
        path = os.path.join(d, "backend.sock")
        self.unix_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix_sock.bind(path)
        os.chmod(path, 0o666)
        self.unix_sock.listen(512)
        return path

    def _early_worker(self, spec: str) -> None:
        """--early-worker: one spare of ``spec``'s type, starting now (a type not offered: none)."""
        scheduler = self.scheduler
        try:
            gpu = scheduler.choose(scheduler.runtime.default_gpu() if spec == "default" else spec)
        except (ValueError, NoSuchDevice) as e:
            log.warning("--early-worker %s: %s; no early worker", spec, e)
            return
        scheduler.spares.early(gpu, scheduler.keep_warm, scheduler.stop_worker)

    async def _watch_idle(self) -> None:
        while not self.uvicorn.should_exit:
            await asyncio.sleep(min(1.0, self.config.idle_grace / 4))
            gone = time.monotonic() - self.kernels.last_client_left
            # (not while a spawned call runs: it outlives its kernel, and its result is kept once it ends)
            if self.kernels.clients == 0 and gone > self.config.idle_grace and not self.kernels.jobs.running():
                log.info("no client for %.1f s: the embedded backend exits", gone)
                self.kernels.closing = True
                if self.config.runtime_file:
                    remove_runtime_file(self.config.runtime_file)  # new kernels start another
                await self.scheduler.shutdown()  # workers first, so no open socket holds us up
                self.uvicorn.should_exit = True

    async def serve(self) -> None:
        if self.config.runtime_file:
            write_runtime_file(
                self.config.runtime_file,
                # (under --users the backend's own token opens nothing: not written either)
                {"url": self.url, "token": None if self.config.users else self.config.token, "pid": os.getpid(),
                 "runtime": self.config.runtime},
            )
        await self.scheduler.runtime.prepare()  # e.g. the local runtime's zygote starts importing now
        self.scheduler.spares.start()
        if self.config.early_worker:
            self._early_worker(self.config.early_worker)
        self.scheduler.dedicated.start()  # hybrid pools: the always-on workers start with the backend
        if self.config.quiet_start:  # (a thread of its own: to_thread's are reused, at their priority)
            await asyncio.to_thread(run_lowered, self._build, name="backend-build")
        else:
            await asyncio.to_thread(self._build)  # while those workers start
        watcher = asyncio.ensure_future(self._watch_idle()) if self.config.embedded else None
        # uvicorn re-raises a SIGTERM it caught once it has stopped serving; with the default action
        # that would kill us before the `finally` below (workers, ledger's last batch, runtime file)
        signal.signal(signal.SIGTERM, lambda *_: None)
        try:
            await self.uvicorn.serve(sockets=[self.sock, *([self.unix_sock] if self.unix_sock else [])])
        finally:
            if watcher:
                watcher.cancel()
            self.kernels.jobs.shutdown()  # calls still running are lost: said in the ledger before it closes
            await self.scheduler.shutdown()
            self.ledger.close()  # the workers' last transitions are committed, not left to the next start
            if self.unix_sock is not None:  # its socket and the directory made for it
                path = self.unix_sock.getsockname()
                self.unix_sock.close()
                with contextlib.suppress(OSError):
                    os.unlink(path)
                    os.rmdir(os.path.dirname(path))
            if self.config.runtime_file:
                remove_runtime_file(self.config.runtime_file)


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv=None, prestarted: Prestarted | None = None) -> None:
    """``prestarted``: __main__'s early worker (prestart.py), spawned before this module's imports."""
    ap = argparse.ArgumentParser(prog="jupyter-gpu serve", description="Run the jupyter-gpu backend.")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    ap.add_argument("--runtime", choices=sorted(RUNTIMES), default=None,
                    help="how workers start (else the config file's runtime, else $JUPYTER_GPU_RUNTIME): local (default), docker (containers on this host's Docker Engine; "
                         "JUPYTER_GPU_DOCKER_BASE / JUPYTER_GPU_DOCKER_IMAGE) or ray (JUPYTER_GPU_RAY_ADDRESS, "
                         "else a local ray.init())")
    ap.add_argument("--token", default=None,
                    help="client token (default: $JUPYTER_GPU_TOKEN, else random; not with --users)")
    ap.add_argument("--keep-warm", type=seconds, default=None, help="seconds an idle lease stays warm")
    ap.add_argument("--max-payload", type=int, default=None, help="largest cell input in bytes")
    ap.add_argument("--max-workers", type=int, default=None, help="workers per GPU type; beyond, cells queue")
    ap.add_argument("--max-workers-per-user", type=cap, metavar="N",
                    help="workers one user's sessions may hold at once (leased, starting); beyond, a cell is refused")
    ap.add_argument("--max-sessions-per-user", type=cap, metavar="N",
                    help="kernel sessions one user may have open at once; beyond, the connection is refused")
    ap.add_argument("--max-queued-per-user", type=cap, metavar="N",
                    help="cells of one user waiting for a worker at once (in the line, or cold-starting); beyond, refused")
    ap.add_argument("--send-timeout", type=seconds, metavar="S",
                    help="seconds a send may wait for a client or worker that does not read; then its connection "
                         "is dropped (default 30)")
    ap.add_argument("--resume-buffer", type=cap, metavar="BYTES",
                    help="bytes of a session's events kept until its kernel acknowledges them, to replay to a kernel "
                         "whose connection dropped (default 64 MiB; past it the oldest go, and a resume says so)")
    ap.add_argument("--worker-heartbeat", type=seconds, metavar="S",
                    help="seconds a worker may send nothing, not even its heartbeat (its reader thread's, sent "
                         "while a cell runs too), before it counts as hung: killed, its cell failed (default 60; 0: never)")
    ap.add_argument("--min-warm", type=int, default=None, help="unleased pre-started workers per GPU type")
    ap.add_argument("--early-worker", metavar="GPU",
                    help="start one worker of this type ('default': the runtime's default) as the backend starts, "
                         "for a first cell about to come: taken as a spare, never replaced, stopped after "
                         "--keep-warm if no cell took it (an embedded backend's kernel asks for one)")
    ap.add_argument("--quiet-start", action="store_true",
                    help="import at a lower priority as the backend starts, and its early worker too (an embedded "
                         "backend started beside its kernel's own start: the jupyter-gpu kernelspec's)")
    ap.add_argument("--dedicated", help="always-on workers per GPU type, e.g. cpu=1,H100=2: they take work "
                                        "first, serverless workers the overflow (billed per hour, busy or not)")
    ap.add_argument("--scale-up-queue", type=int, metavar="N",
                    help="start a spare beyond --min-warm per N cells waiting for a GPU type (within --max-workers)")
    ap.add_argument("--target-utilisation", type=float, metavar="U",
                    help="keep spares so that leased / (leased + spares) stays under U, e.g. 0.7 (within --max-workers)")
    ap.add_argument("--config", help="TOML settings: keep_warm, min_warm, max_workers, ...; [pools.GPU] dedicated = N; "
                                     "[images.NAME] env, preload, python (local), base (docker), runtime_env (ray)")
    ap.add_argument("--ledger", help="where sessions, workers and cells are recorded: a SQLite file (default: in the "
                                     "Jupyter data dir) or a PostgreSQL DSN postgresql://USER@HOST/DB (JUPYTER_GPU_LEDGER)")
    ap.add_argument("--job-ttl", help="how long a spawned call's result is kept after it ends, e.g. 12h, 7d "
                                       "(default 7d; JUPYTER_GPU_JOB_TTL)")
    ap.add_argument("--users", help='JSON file {"user": "token", ...}: one token per user (mode 0600)')
    ap.add_argument("--insecure-shared-workers", action="store_true",
                    help="with --users, serve on a runtime that cannot sandbox each user's workers (docker, ray; "
                         "local when not root): users' cells may then reach each other's")
    ap.add_argument("--session-budget", type=float, help="USD per kernel session; then its cells are refused")
    ap.add_argument("--user-budget", type=float, help="USD per user since the backend started; then refused")
    ap.add_argument("--budget-warn", type=float, default=0.8, help="warn past this fraction of a budget (0.8)")
    ap.add_argument("--no-lane", action="store_true",
                    help="relay every cell through the backend (no direct kernel-worker lane on this host)")
    ap.add_argument("--certfile", help="serve https:// and wss:// only, with this PEM certificate (chain); kernels "
                                       "and workers then verify it (a self-signed one: JUPYTER_GPU_CAFILE / --cafile)")
    ap.add_argument("--keyfile", help="the certificate's private key (with --certfile)")
    ap.add_argument("--cafile", help="certificates the backend's own workers trust for its certificate, besides the "
                                     "system's (default: --certfile itself, so a self-signed one works)")
    ap.add_argument("--embedded", action="store_true", help="exit when the last client has gone")
    ap.add_argument("--runtime-file", help="write url/token/pid here (mode 0600)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 PID`: stacks to the log
    config = BackendConfig(host=args.host, port=args.port, embedded=args.embedded,
                           runtime=settings.RUNTIME.get() or "local")
    try:
        if args.config:
            load_config_file(args.config, config)
            config.config_file = os.path.abspath(args.config)
        if args.runtime:  # the command line wins over the file, the file over the environment
            config.runtime = args.runtime
        if args.dedicated is not None:
            config.dedicated.update(parse_sizes(args.dedicated))
    except (OSError, ValueError) as e:
        ap.error(str(e))
    if args.scale_up_queue is not None:
        config.scale_up_queue = args.scale_up_queue
    if args.target_utilisation is not None:
        config.target_utilisation = args.target_utilisation
    if args.users and args.token:
        ap.error("--token and --users: under --users each client uses its own user's token")
    if args.token or (settings.TOKEN.get() and not args.users):
        config.token = args.token or settings.TOKEN.get()
    if args.keep_warm is not None:
        config.keep_warm = args.keep_warm
    if args.max_payload is not None:
        config.max_payload = args.max_payload
    if args.max_workers is not None:
        config.max_workers = args.max_workers
    for name in ("max_workers_per_user", "max_sessions_per_user", "max_queued_per_user", "send_timeout",
                 "worker_heartbeat", "resume_buffer"):
        if getattr(args, name) is not None:  # the command line wins over the file
            setattr(config, name, getattr(args, name))
    if args.min_warm is not None:
        config.min_warm = args.min_warm
    config.early_worker = args.early_worker
    config.quiet_start = args.quiet_start
    if args.users:
        config.users_file, config.insecure_shared_workers = os.path.abspath(args.users), args.insecure_shared_workers
        try:
            config.users = load_users(args.users)
        except (OSError, ValueError) as e:
            ap.error(str(e))
    if args.ledger:
        config.ledger = args.ledger
    if args.job_ttl:
        try:
            config.job_ttl = parse_duration(args.job_ttl, "--job-ttl")
        except ValueError as e:
            ap.error(str(e))
    config.runtime_file = args.runtime_file
    if bool(args.certfile) != bool(args.keyfile):
        ap.error("--certfile and --keyfile go together")
    if args.certfile:
        config.certfile, config.keyfile = os.path.abspath(args.certfile), os.path.abspath(args.keyfile)
        # the workers this backend starts (they inherit its environment) verify its certificate with it
        os.environ[settings.CAFILE.name] = os.path.abspath(args.cafile or args.certfile)
    elif not _loopback(config.host):
        log.warning("binding %s without TLS: tokens, code and values cross the network in clear; "
                    "serve with --certfile/--keyfile (or bind 127.0.0.1 behind a TLS proxy)", config.host)
    config.session_budget, config.user_budget = args.session_budget, args.user_budget
    config.budget_warn = args.budget_warn
    if args.session_budget is not None or args.user_budget is not None:
        config.lanes = False  # budgets.py: every cell must pass the backend's check before it starts
    if args.no_lane:
        config.lanes = False
    try:
        server = BackendServer(config, prestarted)
    except ValueError as e:  # e.g. --dedicated for a GPU type this runtime does not offer, an image it cannot build
        ap.error(str(e))
    if not args.runtime_file:  # under --users no token of the backend's own opens anything: none printed
        who = f"users' tokens from {args.users}" if config.users else f"token: {config.token}"
        print(f"jupyter-gpu backend at {server.url}  {who}", flush=True)
    asyncio.run(server.serve())
