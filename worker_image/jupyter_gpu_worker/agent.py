"""The worker process: dials out to the backend, registers, then runs cells on its main thread.

One reader thread reads the connections (the backend's websocket and, on the local runtime, the
direct lane of the kernel this worker serves, see ``jupyter_gpu/_wire/lane.py``), whether or not a cell
runs: a request goes to the main thread through a queue, an interrupt request becomes SIGINT for
it, and the reader alone decides to retire.  So nothing wakes another thread when a cell starts or
ends, and no thread takes the GIL from a short cell while it runs.  The main thread runs each cell
(``CellRunner``, cells.py); a cell that came by the lane sends its events back by the lane; the reader
reports its timings to the backend (``metered``, ``LaneMeter`` in meter.py) once the worker has been
idle a moment, so the backend's work stays off the cell's round trip, and announces (``started``) a
lane cell that runs on.  The stream flusher sends buffered output.  Every send to the backend goes
through ``Agent.send_backend`` under one lock, so a multi-frame message is never interleaved with
another.
"""
from __future__ import annotations

import argparse
import collections
import os
import queue
import select
import signal
import sys
import threading
import time

_T_PROCESS = time.monotonic()
WINDOW_BYTES = 64 * 1024 * 1024  # what a worker keeps of what it sent, to send again after a resume
RESUME_WINDOW = 10.0  # seconds a worker tries to resume a dropped connection (the backend waits as long)
SYNC_WINDOW = 16  # buffers of a sync's files (4 MiB each) held at once as they are written (filestream.py)

from jupyter_gpu._wire import lane as lanes  # noqa: E402
from jupyter_gpu._wire import framing, messages, shm, wsclient  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402

from jupyter_gpu_worker import device, sandbox  # noqa: E402
from jupyter_gpu_worker.cells import CellRunner  # noqa: E402
from jupyter_gpu_worker.meter import LaneMeter  # noqa: E402
from jupyter_gpu_worker.telemetry import GpuTelemetry  # noqa: E402
from jupyter_gpu._wire import settings

SECRET_ENV, ID_ENV = settings.WORKER_SECRET.name, settings.WORKER_ID.name
LANE_DIR_ENV = settings.LANE_DIR.name  # set by runtimes whose workers share the kernel's host


class Agent:
    """The worker's connections, and its two threads: the reader (``read_forever``) and the main
    thread (``serve_forever``), which runs the cells (``cells``)."""

    def __init__(self, url: str, secret: str, worker_id: str):
        self.meter = LaneMeter(self.send_backend)  # a lane cell's reports to the backend
        self.worker_id = worker_id
        self.url = url
        self.ws = wsclient.Connection(url, {"X-Worker-Secret": secret, "X-Worker-Id": worker_id}, open_timeout=30,
                                      unix_socket=settings.WORKER_SOCKET.get())  # (a docker worker without network)
        self._send_lock = threading.Lock()
        # what was sent, kept to send again on a resumed connection (wseq, frames, bytes), the last
        # WINDOW_BYTES of it; ``broken``: the connection dropped and the reader is resuming it
        self.wseq = 0
        self._window: collections.deque = collections.deque()
        self._window_bytes = 0
        self.broken = False
        self.resume_key: str | None = None
        self._requests: queue.SimpleQueue = queue.SimpleQueue()  # the reader -> the main thread
        lane_dir = os.environ.get(LANE_DIR_ENV)
        self.listener = lanes.Listener(lane_dir, worker_id) if lane_dir else None
        self.lane: lanes.LaneConnection | None = None  # the kernel's lane, once it opened one
        self.cells = CellRunner(self.send_backend, self.meter)  # the main thread's: the shell and its namespace
        self.beat: float | None = None  # seconds between heartbeats, as the backend asked (None: none)
        self.next_beat = 0.0

    # -- connection --------------------------------------------------------------------------
    def send_backend(self, header: dict, buffers=()) -> None:
        """Send a message to the backend (any thread).  It is kept, numbered (``wseq``), so that a
        connection that drops mid-cell loses none: meanwhile messages are only kept, and the reader
        thread, resuming the connection, sends what the backend did not take (``_resume``)."""
        with self._send_lock:
            header["wseq"] = n = self.wseq + 1
            frames = framing.encode(header, buffers)
            size = sum(len(f) if isinstance(f, bytes) else f.nbytes for f in frames)
            window = self._window
            window.append((n, frames, size))
            self.wseq = n  # (only now: a message that could not even be kept, out of memory, leaves no gap)
            self._window_bytes += size
            while self._window_bytes > WINDOW_BYTES and len(window) > 1:
                self._window_bytes -= window.popleft()[2]
            if self.broken:
                return
            try:
                for f in frames:
                    self.ws.send(f)
            except (ConnectionClosed, OSError):
                self.broken = True  # the reader finds the drop too, and resumes
            except MemoryError as e:  # a numbered message half sent: the connection cannot go on
                _die(e, "sending to the backend")

    def _resume(self, why: Exception) -> bool:
        """Reader: the connection dropped without a close (``why``) while this process lives: dial
        again with the resume key, for up to RESUME_WINDOW seconds, and send what the backend did
        not take; False when it cannot (refused, gone, or what it lacks was let go)."""
        if not self.resume_key:
            return False
        self.broken = True
        t0, pause = time.monotonic(), 0.02
        print(f"jupyter-gpu worker: the connection to the backend dropped ({why}); resuming", file=sys.stderr, flush=True)
        while time.monotonic() - t0 < RESUME_WINDOW:
            try:
                # the cells it has: the backend fails one it sent that never came (lost in the drop)
                cells = ",".join(self.cells.had())
                ws = wsclient.Connection(self.url, {"X-Worker-Id": self.worker_id, "X-Worker-Resume": self.resume_key,
                                                    "X-Worker-Cells": cells},
                                         open_timeout=5, unix_socket=settings.WORKER_SOCKET.get())
                header, _ = framing.parse_first(ws.recv(timeout=5))
            except InvalidStatus:
                return False  # refused: it gave us up
            except (OSError, TimeoutError, ConnectionClosed, framing.ProtocolError):
                time.sleep(pause)  # a backend not reachable for a moment (there is nothing to wait on)
                pause = min(pause * 2, 0.5)
                continue
            if header.get("type") != messages.REGISTERED:
                return False
            got = header.get("got", 0)
            with self._send_lock:
                pending = [e for e in self._window if e[0] > got]
                if (pending[0][0] if pending else self.wseq + 1) != got + 1:
                    return False  # what followed ``got`` was let go: the cell's events would have a gap
                try:
                    for _, frames, _ in pending:
                        for f in frames:
                            ws.send(f)
                except (ConnectionClosed, OSError):
                    continue
                old, self.ws, self.broken = self.ws, ws, False
            old.abort()
            return True
        return False

    def register(self) -> None:
        info = device.describe()
        import IPython

        self.cells.telemetry = GpuTelemetry.for_device(info)  # None on cpu: nothing sampled, nothing paid
        self.send_backend(
            {
                "type": messages.REGISTER,
                "worker": self.worker_id,
                "pid": os.getpid(),
                "host_id": shm.host_id(),
                "python": sys.version.split()[0],
                "ipython": IPython.__version__,
                "startup_s": time.monotonic() - _T_PROCESS,
                "lane": self.listener.describe() if self.listener else None,
                **info,
            }
        )
        header, _ = framing.parse_first(self.ws.recv())
        if header["type"] != messages.REGISTERED:
            raise SystemExit(f"registration refused: {header.get('message', header)}")
        self.resume_key = header.get("resume")
        self.beat = header.get("heartbeat")
        self.next_beat = time.monotonic() + (self.beat or 0.0)

    def _heartbeat(self) -> float | None:
        """Reader: send a heartbeat when one is due; how long until the next (None: none are sent).
        The reader thread sends them whatever the cell does, so a long quiet cell is not a hung
        worker; a stopped or deadlocked process sends none (api/workers.py watches)."""
        if not self.beat:
            return None
        now = time.monotonic()
        if now >= self.next_beat:
            self.next_beat = now + self.beat
            self.send_backend({"type": messages.HEARTBEAT})
        return self.next_beat - now

    def _read_message(self) -> framing.Message | None:
        """Reader: the next message from the backend or the lane; None when woken through the
        pipe.  The backend's messages come first: a ``retire`` must see a lane request that is
        already waiting.  Reports that fall due meanwhile are sent."""
        while True:
            if self.ws.buffered():
                return self._read_backend()
            if self.lane is not None and self.lane.readable(0):
                msg = self._read_lane()
                if msg is not None:
                    return msg
                continue
            fds = [self.ws.sock, self.meter.wake_fd] + [x for x in (self.listener, self.lane) if x is not None]
            waits = [t for t in (self.meter.due(), self._heartbeat()) if t is not None]
            ready, _, _ = select.select(fds, [], [], min(waits) if waits else None)
            if not ready:  # a report or a heartbeat fell due before anything arrived
                self.meter.report()
                continue
            if self.meter.wake_fd in ready:
                os.read(self.meter.wake_fd, 4096)
                return None
            if self.ws.sock in ready:
                return self._read_backend()
            if self.lane is not None and self.lane in ready:
                msg = self._read_lane()  # not through the loop's top: that would select once more
                if msg is not None:
                    return msg
                continue
            if self.listener is not None and self.listener in ready:
                conn = self.listener.accept(self.cells.session)
                if conn is not None:  # the kernel reconnected: its old lane is dead to it
                    if self.lane is not None:
                        self.lane.close()
                    self.lane = conn

    def _read_backend(self) -> framing.Message:
        try:
            frame = self.ws.recv()
            header, inline = framing.parse_first(frame)
            if "uid" in header and header.get("type") == messages.EXECUTE:  # the sandbox's user, before any of its code
                try:
                    sandbox.drop(header["uid"])
                except (OSError, PermissionError) as e:
                    print(f"jupyter-gpu worker: cannot become uid {header['uid']}: {e}", file=sys.stderr, flush=True)
                    self._exit()
            span = _sync_span(header) if "sync" in header and header.get("nframes") else None
            if span is not None and header["type"] == messages.EXECUTE:
                # a sync with files: handed to the main thread now, which writes them as they come
                # while this thread reads the rest (_fill): the writes overlap the transfer, in a
                # window of buffers used again and again (filetree.apply releases each)
                assembly = framing.Assembly(header, self.ws.recv, window=SYNC_WINDOW, first=span[0], end=span[1],
                                            into=True)
                msg = framing.Message(header, assembly.buffers)
                msg.assembly = assembly
                return msg
            return framing.Message(header, framing.assemble(header, inline, self.ws.recv, into=True))
        except ConnectionClosed as e:
            # a message half read is lost with the connection: the backend, told which cells this
            # worker has, fails one it sent that never came whole
            if e.rcvd is None and self._resume(e):
                return None  # the next read is on the resumed connection
            self._exit()  # the backend went away: a worker never outlives its backend
        except framing.ProtocolError:
            raise
        except Exception:
            self._exit()

    def _fill(self, msg: framing.Message) -> None:
        """Reader: the rest of a request the main thread already has (``_read_backend``).  Cut off
        by a dropped connection: the cell is not among those this worker says it has when it
        resumes (the backend fails it), and the main thread, waiting on its buffers, drops it."""
        try:
            msg.assembly.fill()
        except ConnectionClosed as e:
            self.cells.cut = msg.header["cell"]
            if not (e.rcvd is None and self._resume(e)):
                self._exit()
        except framing.ProtocolError:
            raise
        except Exception:
            self._exit()

    def _read_lane(self) -> framing.Message | None:
        """A message from the kernel's lane; None (and the lane dropped) when it closed or lied."""
        try:
            msg = self.lane.recv()
        except (lanes.LaneClosed, framing.ProtocolError):
            msg = None
        if msg is None or msg.type not in (messages.EXECUTE, messages.INTERRUPT, messages.INPUT_REPLY):
            self.lane.close()
            self.lane = None
            return None
        msg.header["session"] = self.cells.session  # the lane was opened by this session only
        msg.lane = self.lane
        if msg.type == messages.EXECUTE:
            self.meter.announce_later(msg.header["cell"])
        return msg

    def _control(self, msg: framing.Message) -> bool:
        """Handle a message that needs no main thread; True when it was one."""
        kind = msg.type
        if kind == messages.INTERRUPT:
            self.cells.interrupt(msg.header.get("cell"))
            return True
        if kind == messages.INPUT_REPLY:
            self.cells.input_reply(msg.header)
            return True
        if kind == messages.REPORT:
            self.meter.report_now()
            return True
        if kind == messages.SHUTDOWN:
            self._exit()
        return False

    def _retire(self, msg: framing.Message) -> None:
        """Reader: keep-warm ran out (the backend's view): exit, unless a cell ran since, one runs
        or waits, or the backend has not heard of one."""
        if not self.meter.retirable(lambda: msg.header.get("cells") != self.cells.ran):
            return
        if self.lane is not None and self.lane.readable(0):
            return  # a request waits: the next read hands it over
        if self.listener is not None:
            self.listener.close()  # from here on the kernel's lane finds nobody: it asks the backend
        self.send_backend({"type": messages.RETIRED, "cells": self.cells.ran})
        self._exit()

    def _exit(self) -> None:
        try:
            self.meter.flush()  # lane cells the backend has not heard of: its ledger must have them
        except Exception:
            pass  # the backend is gone: nobody to tell
        self.cells.out_pool.close()
        if self.listener is not None:
            self.listener.close()
        self.cells.mirrors.remove()  # the kernels' synced directories (os._exit runs no atexit)
        os._exit(0)

    def read_forever(self) -> None:
        """Reader thread: hand requests to the main thread, act on everything else at once.  If it
        fails, the worker exits: a worker that can no longer hear the backend must not linger deaf."""
        try:
            self._read_forever()
        except BaseException as e:
            _die(e, "its reader thread")

    def _read_forever(self) -> None:
        while True:
            msg = self._read_message()
            if msg is None or self._control(msg):
                continue
            if msg.type == messages.RETIRE:
                self._retire(msg)
            elif msg.type == messages.EXECUTE:
                self.meter.handed_over()
                self.cells.queued(msg.header["cell"])
                self._requests.put(msg)
                if getattr(msg, "assembly", None) is not None:
                    self._fill(msg)

    # -- the main thread -------------------------------------------------------------------------
    def serve_forever(self) -> None:
        while True:
            try:
                msg = self._requests.get()
            except KeyboardInterrupt:
                continue  # an interrupt that arrived just after its cell finished
            try:
                self.cells.execute(msg)
            except KeyboardInterrupt:
                pass  # likewise, once the cell had ended
            except BaseException as e:  # the cell's own errors end in its events: this is ours
                _die(e, "its main thread")
            finally:
                self.meter.request_ended()


def _sync_span(header: dict) -> tuple[int, int] | None:
    """(first, end): the request's buffers that hold its sync's files (None: it has none); only
    those are written as they come and let go (a function call's buffers after them are kept)."""
    sync = header["sync"]
    put = sync.get("put") if isinstance(sync, dict) else None
    if not isinstance(put, list):
        return None
    at = [e[4] for e in put if isinstance(e, list) and len(e) == 6 and type(e[4]) is int and e[4] >= 0]
    return (min(at), max(at) + 1) if at else None


def _die(e: BaseException, where: str) -> None:
    """The worker's own machinery failed (not a cell's code): exit at once, with a status the
    backend puts in words (out of memory: messages.EXIT_OUT_OF_MEMORY), rather than linger half-alive."""
    try:
        print(f"jupyter-gpu worker: {where} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    except BaseException:
        pass  # (out of memory, even for that)
    os._exit(messages.EXIT_OUT_OF_MEMORY if _out_of_memory(e) else messages.EXIT_WORKER_FAILED)


def _out_of_memory(e: BaseException) -> bool:
    """Whether the worker failed for want of memory: a MemoryError behind ``e``, or (C code that met
    a failed allocation raises SystemError, or nothing sensible) the process at its address-space
    limit (RLIMIT_AS, which a cell may have lowered)."""
    while e is not None:
        if isinstance(e, MemoryError):
            return True
        e = e.__context__
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft == resource.RLIM_INFINITY:
            return False
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE") > 0.9 * soft
    except MemoryError:  # (out of memory for that too)
        return True
    except Exception:
        return False


def image_sites() -> None:
    """A built image's own site-packages (``JUPYTER_GPU_IMAGE_SITES``), first on ``sys.path`` with
    their ``.pth`` files, so its packages are the ones imported (runtimes/envs.py)."""
    sites = settings.IMAGE_SITES.get()
    if not sites:
        return
    import importlib
    import site

    before = list(sys.path)
    for d in reversed(sites.split(os.pathsep)):
        site.addsitedir(d)
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + before
    importlib.invalidate_caches()


def preload_image() -> None:
    """Import the worker image's ``preload`` modules before the first cell (already imported, so
    free, in a worker forked from its image's zygote).  One that fails to import fails the start:
    its ImportError is the log tail the cell's WorkerStartFailed shows."""
    import importlib

    for name in filter(None, settings.IMAGE_PRELOAD.get().split(",")):
        importlib.import_module(name)


def preload_early(requests: queue.SimpleQueue) -> list[str]:
    """The early worker of a backend started beside its kernel (--quiet-start) has ~0.3 s before
    the first cell (the kernel's start and `%load_ext`): it imports EARLY_PRELOAD's installed modules
    then, at the quiet start's priority, one at a time until a request waits.  A notebook's first
    `%%gpu` cell that imports numpy took ~0.12 s of its worker next to the kernel's own import of it
    (prefetch.py) and ~0.07 s alone; preloaded, the cell took as long as the same local cell.
    torch is not in the default list: ~1.5 s of a core, longer than the kernel's start, so a first
    cell would wait for it (the zygote preloads it).  What fails to import here is left to the cell
    that imports it, which says why.  The modules imported."""
    import functools
    import importlib

    from jupyter_gpu._wire.priority import run_lowered

    done = []
    for name in filter(None, settings.EARLY_PRELOAD.get().split(",")):
        if not requests.empty():
            break  # the first cell (or anything else) is waiting: it goes first
        try:
            run_lowered(functools.partial(importlib.import_module, name), name="early-preload")
        except KeyboardInterrupt:  # a SIGINT meant for no cell (none runs yet): stop preloading
            break
        except Exception:  # not installed (ModuleNotFoundError), or failing: the cell's to report
            continue
        done.append(name)
    return done


def _secret_from_fd() -> str:
    """The one-time secret from the descriptor the runtime left open for it (then closed)."""
    fd = os.environ.pop(settings.WORKER_SECRET_FD.name, None)
    if fd is None:
        return ""
    with os.fdopen(int(fd), "rb") as f:
        return f.readline().decode().strip()


def main(argv=None, secret: str | None = None, quiet_start: bool = False) -> None:
    """``quiet_start``: started beside a kernel's start (QUIET_START): it preloads (preload_early)."""
    ap = argparse.ArgumentParser(prog="jupyter_gpu_worker")
    ap.add_argument("--url", required=True, help="backend websocket URL for workers")
    args = ap.parse_args(argv)
    if secret is None:
        secret = _secret_from_fd() or os.environ.pop(SECRET_ENV, "")
    worker_id = os.environ.get(ID_ENV, f"w-{os.getpid()}")
    # the stop button arrives as SIGINT: a launcher may have left it ignored or blocked (Ray does)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    image_sites()
    preload_image()
    agent = Agent(args.url, secret, worker_id)
    signal.signal(signal.SIGINT, agent.cells.on_sigint)
    agent.register()
    threading.Thread(target=agent.read_forever, name="reader", daemon=True).start()
    if quiet_start:
        preload_early(agent._requests)
    agent.serve_forever()
