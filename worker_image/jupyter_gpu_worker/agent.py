"""The worker process: dials out to the backend, registers, then runs cells on its main thread.

One reader thread reads the connections (the backend's websocket and, on the local runtime, the
direct lane of the kernel this worker serves, see ``jupyter_gpu/lane.py``), whether or not a cell
runs: a request goes to the main thread through a queue, an interrupt request becomes SIGINT for
it, and the reader alone decides to retire.  So nothing wakes another thread when a cell starts or
ends, and no thread takes the GIL from a short cell while it runs.  A cell that came by the lane
sends its events back by the lane; the reader reports its timings to the backend (``metered``)
once the worker has been idle a moment, so the backend's work stays off the cell's round trip, and
announces (``started``) a lane cell that runs on.  The stream flusher sends buffered output.  Every
send goes through ``Agent.send`` under one lock, so a multi-frame message is never interleaved with
another.
"""
from __future__ import annotations

import argparse
import os
import queue
import select
import signal
import sys
import threading
import time

_T_PROCESS = time.monotonic()

from jupyter_gpu._wire import lane as lanes  # noqa: E402
from jupyter_gpu._wire import framing, messages, serialization, shm, wsclient  # noqa: E402
from jupyter_gpu.errors import SerializationError  # noqa: E402
from IPython.core.error import StdinNotImplementedError  # noqa: E402

from jupyter_gpu_worker import device  # noqa: E402
from jupyter_gpu_worker.fdcapture import FdCapture  # noqa: E402
from jupyter_gpu_worker.meter import LaneReports  # noqa: E402
from jupyter_gpu_worker.results import Holdings, before_cell, pack_results  # noqa: E402
from jupyter_gpu_worker.shell import Emitter, make_shell  # noqa: E402
from jupyter_gpu_worker.telemetry import GpuTelemetry  # noqa: E402
from jupyter_gpu._wire import settings

SECRET_ENV, ID_ENV = settings.WORKER_SECRET.name, settings.WORKER_ID.name
LANE_DIR_ENV = settings.LANE_DIR.name  # set by runtimes whose workers share the kernel's host
INTERRUPT_RETRY, INTERRUPT_RETRIES = 0.3, 5


class Agent(LaneReports):
    def __init__(self, url: str, secret: str, worker_id: str):
        LaneReports.__init__(self)
        self.worker_id = worker_id
        self.ws = wsclient.Connection(url, {"X-Worker-Secret": secret, "X-Worker-Id": worker_id}, open_timeout=30)
        self._send_lock = threading.Lock()
        self._requests: queue.SimpleQueue = queue.SimpleQueue()  # the reader -> the main thread
        self._input_replies: queue.SimpleQueue = queue.SimpleQueue()  # the reader -> ask_user
        self.executing: str | None = None
        # cells handed to the main thread that have not begun -> whether the stop button was pressed
        # for it meanwhile (kept until it begins; under _start_lock)
        self._start_lock = threading.Lock()
        self._waiting: dict[str, bool] = {}
        self.session: str | None = None
        lane_dir = os.environ.get(LANE_DIR_ENV)
        self.listener = lanes.Listener(lane_dir, worker_id) if lane_dir else None
        self.lane: lanes.LaneConnection | None = None  # the kernel's lane, once it opened one
        self.reply_lane: lanes.LaneConnection | None = None  # set while a lane cell runs
        self.cells_done = 0  # cells that ran (the backend compares it before retiring us)
        self.interrupt_seen = False  # our SIGINT handler ran since the last interrupt request
        self.telemetry: GpuTelemetry | None = None  # set at registration when there is a GPU
        self.holdings = Holdings()  # what the kernel holds of this namespace, and this worker's hashes
        self.out_pool = shm.SegmentPool()
        self.reader = shm.SegmentReader()
        self.emitter = Emitter(self.send)
        self.shell = make_shell(self.emitter, self.ask_user)
        self.fd_output = FdCapture(self.emitter)  # subprocesses' and C libraries' output too
        self._fresh_ns = set(self.shell.user_ns)

    # -- connection --------------------------------------------------------------------------
    def send(self, header: dict, buffers=()) -> None:
        lane = self.reply_lane
        if lane is not None:  # a lane cell's events go back by the lane
            try:
                lane.send(header, buffers)
            except lanes.LaneClosed:
                pass  # the kernel is gone; the cell still ends and is metered
            return
        self.send_backend(header, buffers)

    def send_backend(self, header: dict, buffers=()) -> None:
        frames = framing.encode(header, buffers)
        with self._send_lock:
            for f in frames:
                self.ws.send(f)

    def register(self) -> None:
        info = device.describe()
        import IPython

        self.device = info
        self.telemetry = GpuTelemetry.for_device(info)  # None on cpu: nothing sampled, nothing paid
        self.send(
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
            fds = [self.ws.sock, self._wake_r] + [x for x in (self.listener, self.lane) if x is not None]
            ready, _, _ = select.select(fds, [], [], self._reporting_due())
            if not ready:  # a report fell due before anything arrived
                self._report()
                continue
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
                return None
            if self.ws.sock in ready:
                return self._read_backend()
            if self.lane is not None and self.lane in ready:
                msg = self._read_lane()  # not through the loop's top: that would select once more
                if msg is not None:
                    return msg
                continue
            if self.listener is not None and self.listener in ready:
                conn = self.listener.accept(self.session)
                if conn is not None:  # the kernel reconnected: its old lane is dead to it
                    if self.lane is not None:
                        self.lane.close()
                    self.lane = conn

    def _read_backend(self) -> framing.Message:
        try:
            frame = self.ws.recv()
        except Exception:
            self._exit()  # the backend went away: a worker never outlives its backend
        header, inline = framing.parse_first(frame)
        return framing.Message(header, framing.assemble(header, inline, self.ws.recv))

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
        msg.header["session"] = self.session  # the lane was opened by this session only
        msg.lane = self.lane
        if msg.type == messages.EXECUTE:
            self._announce_later(msg.header["cell"])
        return msg

    def _control(self, msg: framing.Message) -> bool:
        """Handle a message that needs no main thread; True when it was one."""
        kind = msg.type
        if kind == messages.INTERRUPT:
            cell = msg.header.get("cell")
            with self._start_lock:
                running = self.executing is not None and self.executing == cell
                if not running and cell in self._waiting:
                    self._waiting[cell] = True  # it stops as it begins
            if running:
                self.interrupt_seen = False
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
                threading.Thread(target=self._interrupt_again, args=(cell,), daemon=True).start()
            return True
        if kind == messages.INPUT_REPLY:
            if msg.header.get("cell") == self.executing:  # else: its cell ended (interrupted) meanwhile
                self._input_replies.put(msg.header)
            return True
        if kind == messages.REPORT:
            self._report_now()
            return True
        if kind == messages.SHUTDOWN:
            self._exit()
        return False

    def ask_user(self, prompt: str, password: bool = False) -> str:
        """``input()`` / ``getpass()`` in a cell: the kernel asks the notebook's user (stdin.py)."""
        cell = self.executing
        if cell is None:
            raise StdinNotImplementedError("input() was called outside a running %%gpu cell: nobody can answer it")
        while not self._input_replies.empty():
            self._input_replies.get()  # a reply to an earlier request, which an interrupt abandoned
        self.emitter.event({"type": messages.INPUT_REQUEST, "prompt": prompt, "password": password})
        return raise_reply(self._input_replies.get())  # the stop button interrupts this wait

    def on_sigint(self, signum, frame):
        """The worker's SIGINT handler: like Python's own, and it notes that Python code saw it."""
        self.interrupt_seen = True
        raise KeyboardInterrupt

    def _interrupt_again(self, cell: str) -> None:
        """A SIGINT that lands after the main thread's last signal check but before it enters a
        blocking call (one long ``time.sleep``) does not cut that call short; Python would see it
        only when the call returns.  So while the cell runs on and our handler has not run, send it
        again (each one interrupts the call it finds), a few times at most."""
        for _ in range(INTERRUPT_RETRIES):
            time.sleep(INTERRUPT_RETRY)
            if self.executing != cell or self.interrupt_seen or signal.getsignal(signal.SIGINT) != self.on_sigint:
                return  # ended, seen, or the cell's own code handles SIGINT its way
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    def _retire(self, msg: framing.Message) -> None:
        """Reader: keep-warm ran out (the backend's view): exit, unless a cell ran since, one runs
        or waits, or the backend has not heard of one."""
        with self._meter_lock:
            if self._meters:
                self._flush_meters_locked()  # its `metered` re-arms keep-warm
                return
            if msg.header.get("cells") != self.cells_done or self._pending:
                return  # the backend re-arms keep-warm when that cell's `metered` reaches it
        if self.lane is not None and self.lane.readable(0):
            return  # a request waits: the next read hands it over
        if self.listener is not None:
            self.listener.close()  # from here on the kernel's lane finds nobody: it asks the backend
        self.send({"type": messages.RETIRED, "cells": self.cells_done})
        self._exit()

    def _exit(self) -> None:
        try:
            self.flush_meters()  # lane cells the backend has not heard of: its ledger must have them
        except Exception:
            pass  # the backend is gone: nobody to tell
        self.out_pool.close()
        if self.listener is not None:
            self.listener.close()
        os._exit(0)

    def read_forever(self) -> None:
        """Reader thread: hand requests to the main thread, act on everything else at once."""
        while True:
            msg = self._read_message()
            if msg is None or self._control(msg):
                continue
            if msg.type == messages.RETIRE:
                self._retire(msg)
            elif msg.type == messages.EXECUTE:
                with self._meter_lock:
                    self._pending += 1
                with self._start_lock:
                    self._waiting[msg.header["cell"]] = False
                self._requests.put(msg)

    # -- cells ---------------------------------------------------------------------------------
    def serve_forever(self) -> None:
        while True:
            try:
                msg = self._requests.get()
            except KeyboardInterrupt:
                continue  # an interrupt that arrived just after its cell finished
            try:
                self.execute(msg)
            except KeyboardInterrupt:
                pass  # likewise, once the cell had ended
            finally:
                self._ended()

    def _reset_session(self, session: str) -> None:
        ns = self.shell.user_ns
        for name in list(ns):
            if name not in self._fresh_ns:
                del ns[name]
        self.holdings.clear()
        self.out_pool.reclaim()  # the previous kernel's mappings are gone with its session
        self.session = session

    def execute(self, msg: framing.Message) -> None:
        via_lane = getattr(msg, "lane", None)
        if via_lane is None:
            self._execute(msg)
            return
        t0 = time.monotonic()
        self.reply_lane = via_lane
        try:
            self._execute(msg, t0)  # it owes the backend the cell's report, as `done` goes
        finally:
            self.reply_lane = None

    def _owe_report(self, h: dict, status: str, timings: dict, ended: float) -> None:
        """A lane cell's report (a resend too: it ends what a `started` began), owed before its
        `done` goes: the kernel may exit at once, and the shutdown that follows (on the reader
        thread) must find it, not race this thread to it."""
        self._meter({"type": messages.METERED, "cell": h["cell"], "status": status, "timings": timings,
                     "keep_warm": h.get("keep_warm")}, ended)

    def _execute(self, msg: framing.Message, t_received: float | None = None) -> None:
        """Run one cell; its events go wherever ``send`` sends.  A lane cell (``t_received``: when it
        arrived) is timed here, and its report owed to the backend."""
        h = msg.header
        cell = h["cell"]
        if h["session"] != self.session:
            self._reset_session(h["session"])  # a new session always starts from a fresh namespace
        else:
            self.out_pool.returned(h.get("returned", ()))  # results the kernel no longer holds
        ns = self.shell.user_ns
        missing = [n for n, hsh in h.get("keep", {}).items() if self.holdings.held.get(n) != hsh or n not in ns]
        if missing:
            with self._start_lock:
                self._waiting.pop(cell, None)
            self.send({"type": messages.RESEND, "cell": cell, "names": missing})
            if t_received is not None:
                self._owe_report(h, "resend", {}, time.monotonic())
            self.send(messages.done(cell, "resend"))
            return
        self.emitter.cell = cell
        status, timings, telemetry = "ok", {}, {}
        outputs, buffers = {}, []
        t0 = time.monotonic()
        with self._start_lock:  # from here the stop button interrupts it: loading a big input too
            stopped = self._waiting.pop(cell, False)
            self.executing = cell
        try:
            if stopped:  # the stop button was pressed before it began
                raise KeyboardInterrupt
            try:
                for name, spec in h.get("inputs", {}).items():
                    ns[name] = serialization.unpack(name, spec, msg.buffers, self.reader)
                    self.holdings.arrived(name, ns[name], spec)
            except SerializationError as e:
                self._error(e)
                status = "error"
                return
            t1 = time.monotonic()
            timings["load"] = t1 - t0
            self.shell.execution_count = h.get("exec_count", self.shell.execution_count)
            before = before_cell(ns)
            if self.telemetry is not None:
                self.telemetry.start()
            try:
                # no history: the kernel numbers the cells (execution_count above, the traceback's
                # "Cell In[n]"); storing inputs in a disabled HistoryManager only grows its caches
                # and sets _i/_ii/_iN traits (~0.1 ms a cell).  A cell seen before is not compiled again.
                result = self.shell.run_cell_fast(h["code"])
            finally:
                self.executing = None
                if self.telemetry is not None:
                    telemetry = self.telemetry.stop()
            t2 = time.monotonic()
            timings["exec"] = t2 - t1
            err = result.error_before_exec or result.error_in_exec
            if err is not None:
                status = "interrupted" if isinstance(err, KeyboardInterrupt) else "error"
                self._send_error_object(err)
            packer = serialization.Packer(shm_pool=self.out_pool if h.get("shm") else None)
            outputs, buffers = pack_results(h, cell, ns, self.holdings, packer, before), packer.buffers
            timings["post"] = time.monotonic() - t2
        except KeyboardInterrupt as e:
            status = "interrupted"
            self._error(e)
        except BaseException as e:  # our own failure must still end the cell, with its cause
            status = "error"
            self._error(e)
        finally:
            self.executing = None
            self.cells_done += 1
            if t_received is not None:  # a lane cell: no backend to time it, so the worker does
                timings["run"] = time.monotonic() - t_received
                self._owe_report(h, status, timings, t_received + timings["run"])
            self.fd_output.drain()  # what reached fds 1 and 2 goes out before `done`
            # the results ride on the final event: a warm cell costs one message per hop
            returned = self.reader.drain_returned()  # input segments whose values died here
            self.emitter.end(
                messages.done(cell, status, timings, returned=returned, **outputs,
                              **({"telemetry": telemetry} if telemetry else {})),
                buffers,
            )
            self.out_pool.lent(self.session)

    def _error(self, e: BaseException) -> None:
        self.emitter.event(
            {
                "type": messages.ERROR,
                "ename": type(e).__name__,
                "evalue": str(e),
                "traceback": [f"{type(e).__name__}: {e}"],
            }
        )

    def _send_error_object(self, err: BaseException) -> None:
        """The exception itself, pickled, so the kernel can re-raise the real class when it can."""
        try:
            p = serialization.pickle_value("<exception>", err)
        except SerializationError:
            return
        packer = serialization.Packer()
        spec = packer.pack(p)
        self.emitter.event({"type": messages.ERROR, "pickled": spec}, packer.buffers)


# what a local cell's input() raises where the kernel could not ask (the kernel's stdin.py sends the name)
INPUT_ERRORS = {"StdinNotImplementedError": StdinNotImplementedError, "EOFError": EOFError,
                "KeyboardInterrupt": KeyboardInterrupt}


def raise_reply(reply: dict) -> str:
    """The value the user typed, or the error a local cell would have raised."""
    err = reply.get("error")
    if err is None:
        return str(reply.get("value", ""))
    cls = INPUT_ERRORS.get(err.get("ename"), RuntimeError)
    raise cls(err.get("evalue", "")) if err.get("evalue") else cls()


def preload_image() -> None:
    """Import the worker image's ``preload`` modules before the first cell (already imported, so
    free, in a worker forked from its image's zygote).  One that fails to import fails the start:
    its ImportError is the log tail the cell's WorkerStartFailed shows."""
    import importlib

    for name in filter(None, settings.IMAGE_PRELOAD.get().split(",")):
        importlib.import_module(name)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="jupyter_gpu_worker")
    ap.add_argument("--url", required=True, help="backend websocket URL for workers")
    args = ap.parse_args(argv)
    secret = os.environ.pop(SECRET_ENV, "")
    worker_id = os.environ.get(ID_ENV, f"w-{os.getpid()}")
    # the stop button arrives as SIGINT: a launcher may have left it ignored or blocked (Ray does)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    preload_image()
    agent = Agent(args.url, secret, worker_id)
    signal.signal(signal.SIGINT, agent.on_sigint)
    agent.register()
    threading.Thread(target=agent.read_forever, name="reader", daemon=True).start()
    agent.serve_forever()
