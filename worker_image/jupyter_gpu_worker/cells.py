"""One cell's execution on the worker's main thread: its session's namespace, its inputs, the shell
that runs it, its results and its ``done``; ``input()`` in it, and the stop button for it.

The agent's reader thread hands each request over (``queued``) and passes on what concerns the
running cell (``interrupt``, ``input_reply``); the main thread runs it (``execute``).  A cell's
events go wherever ``CellRunner.send`` sends: back by the lane a lane cell came by, else to the backend.
"""
from __future__ import annotations

import queue
import signal
import sys
import threading
import time
from typing import Callable

from IPython.core.error import StdinNotImplementedError

from jupyter_gpu._wire import framing, handshake, messages, serialization, settings, shm
from jupyter_gpu._wire import lane as lanes
from jupyter_gpu.errors import SerializationError
from jupyter_gpu_worker import calls, history
from jupyter_gpu_worker.environ import KernelEnviron
from jupyter_gpu_worker.events import Emitter
from jupyter_gpu_worker.fdcapture import FdCapture
from jupyter_gpu_worker.meter import LaneMeter
from jupyter_gpu_worker.mirror import Mirrors
from jupyter_gpu_worker.results import Holdings, before_cell, pack_results, take_inputs
from jupyter_gpu_worker.shell import make_shell
from jupyter_gpu_worker.telemetry import GpuTelemetry
from jupyter_gpu_worker.workdir import WorkDir

INTERRUPT_RETRY, INTERRUPT_RETRIES = 0.3, 5


class CellRunner:
    """The cells of this worker, run one at a time.  ``send_backend(header, buffers)`` sends to the
    backend; a lane cell's report is owed to ``meter``."""

    def __init__(self, send_backend: Callable, meter: LaneMeter):
        self._send_backend = send_backend
        self.meter = meter
        self._input_replies: queue.SimpleQueue = queue.SimpleQueue()  # the reader -> ask_user
        self.executing: str | None = None
        self.last: str | None = None  # the cell begun last (its events may still be on their way)
        # cells handed to the main thread that have not begun -> whether the stop button was pressed
        # for it meanwhile (kept until it begins; under _start_lock)
        self._start_lock = threading.Lock()
        self._waiting: dict[str, bool] = {}
        self.session: str | None = None
        self.cut: str | None = None  # a cell whose request stopped arriving (reader): the worker never had it
        self.reply_lane: lanes.LaneConnection | None = None  # set while a lane cell runs
        self.ran = 0  # cells that ran (the backend compares it before retiring us)
        self.interrupt_seen = False  # our SIGINT handler ran since the last interrupt request
        self.telemetry: GpuTelemetry | None = None  # set at registration when there is a GPU
        self.holdings = Holdings()  # what the kernel holds of this namespace, and this worker's hashes
        self.out_pool = shm.SegmentPool()
        self.reader = shm.SegmentReader()
        self.emitter = Emitter(self.send)
        self.shell = make_shell(self.emitter, self.ask_user)
        self.fd_output = FdCapture(self.emitter)  # subprocesses' and C libraries' output too
        self._fresh_ns = set(self.shell.user_ns)
        self.workdir = WorkDir()  # the kernel's working directory, followed cell by cell
        self.mirrors = Mirrors()  # or a mirror of it, where this worker cannot see it
        self.environ = KernelEnviron()  # the variables the notebook set, its code directories
        self.calls = calls.Calls()  # the functions called here, by hash
        self.sync_files = settings.FILES.get() == "sync"  # the backend says: never the kernel's own directory

    def send(self, header: dict, buffers=()) -> None:
        """The emitter's sender (the main thread and the stream flusher call it)."""
        lane = self.reply_lane
        if lane is not None:  # a lane cell's events go back by the lane
            try:
                lane.send(header, buffers)
            except lanes.LaneClosed:
                pass  # the kernel is gone; the cell still ends and is metered
            return
        self._send_backend(header, buffers)

    # -- the reader thread -----------------------------------------------------------------------
    def waiting(self) -> list:
        """The cells handed over that have not begun (any thread)."""
        with self._start_lock:
            return list(self._waiting)

    def had(self) -> list:
        """Reader, resuming: the cells this worker has (the last begun, those waiting), not one whose
        request was cut off as it arrived - the backend fails that one."""
        return [c for c in filter(None, [self.last, *self.waiting()]) if c != self.cut]

    def queued(self, cell: str) -> None:
        """Reader: ``cell`` goes to the main thread; a stop press before it begins is kept for it."""
        with self._start_lock:
            self._waiting[cell] = False

    def interrupt(self, cell: str | None) -> None:
        """Reader: the stop button for ``cell``: SIGINT to the main thread when it runs."""
        with self._start_lock:
            running = self.executing is not None and self.executing == cell
            if not running and cell in self._waiting:
                self._waiting[cell] = True  # it stops as it begins
        if running:
            self.interrupt_seen = False
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            threading.Thread(target=self._interrupt_again, args=(cell,), daemon=True).start()

    def input_reply(self, header: dict) -> None:
        """Reader: the kernel's answer to the running cell's ``input()``."""
        if header.get("cell") == self.executing:  # else: its cell ended (interrupted) meanwhile
            self._input_replies.put(header)

    # -- the main thread -------------------------------------------------------------------------
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

    def _reset_session(self, session: str) -> None:
        ns = self.shell.user_ns
        for name in list(ns):
            if name not in self._fresh_ns:
                del ns[name]
        self.holdings.clear()
        history.forget(self.shell)
        self.out_pool.reclaim()  # the previous kernel's mappings are gone with its session
        self.mirrors.clear()  # and its files, variables and code directories
        self.environ.reset()
        self.calls.clear()
        self.session = session

    def execute(self, msg: framing.Message) -> None:
        """Main thread: run the cell ``msg`` asks for."""
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
        label = messages.function_label(h.get("call"))
        self.meter.owe({"type": messages.METERED, "cell": h["cell"], "status": status, "timings": timings,
                        "keep_warm": h.get("keep_warm"), **({"function": label} if label else {})}, ended)

    def _execute(self, msg: framing.Message, t_received: float | None = None) -> None:
        """Run one cell; its events go wherever ``send`` sends.  A lane cell (``t_received``: when it
        arrived) is timed here, and its report owed to the backend."""
        h = msg.header
        cell = self.last = h["cell"]
        if h["session"] != self.session:
            self._reset_session(h["session"])  # a new session always starts from a fresh namespace
        else:
            self.out_pool.returned(h.get("returned", ()))  # results the kernel no longer holds
        ns = self.shell.user_ns
        missing = [n for n, hsh in h.get("keep", {}).items() if self.holdings.held.get(n) != hsh or n not in ns]
        if "call" in h and not self.calls.held(h["call"]):
            missing.append(calls.MISSING)  # a function this worker does not hold: sent again with it
        assembly = getattr(msg, "assembly", None)  # a large sync handed over as it arrives (agent.py)
        try:
            cwd, needs_files = self._directory(h, msg.buffers, assembly) if not missing else (None, False)
        except Exception as e:  # the kernel's files could not be written here (disk full, a path refused)
            with self._start_lock:
                self._waiting.pop(cell, None)
            if not _arrived(assembly):
                return
            self.emitter.cell = cell
            self._error(OSError(f"the notebook's directory could not be synced to this worker: {type(e).__name__}: {e}"))
            if t_received is not None:
                self._owe_report(h, "error", {}, time.monotonic())
            self.emitter.end(messages.done(cell, "error"), [])
            return
        if not _arrived(assembly):  # (nothing is said of a request before all of it is here)
            with self._start_lock:
                self._waiting.pop(cell, None)
            return
        if missing or needs_files:
            with self._start_lock:
                self._waiting.pop(cell, None)
            self.send({"type": messages.RESEND, "cell": cell, "names": missing, **({"files": True} if needs_files else {})})
            if t_received is not None:
                self._owe_report(h, "resend", {}, time.monotonic())
            self.send(messages.done(cell, "resend"))
            return
        self.emitter.cell = cell
        self.shell.kernel.set_parent(h.get("parent"))  # what get_ipython().kernel.get_parent() gives
        self.workdir.enter(cwd, lambda text: self.emitter.write_stream("stderr", text))  # seen (_directory)
        if "env" in h or "path" in h or self.environ.paths:
            self.environ.apply(h.get("env"), h.get("path"), self.mirrors.mirror_path if self.mirrors.root else None)
        if "follow" in h:  # the kernel's versions of what the notebook uses, where the image has others
            handshake.follow(h["follow"])
        if "versions" in h:  # the kernel's versions of the packages the cell uses: where this worker differs, a table
            said = handshake.cell_table(h["versions"])
            if said:
                self.emitter.write_stream("stderr", said)
        status, timings, telemetry = "ok", {}, {}
        outputs, buffers = {}, []
        t0 = time.monotonic()
        with self._start_lock:  # from here the stop button interrupts it: loading a big input too
            stopped = self._waiting.pop(cell, False)
            self.executing = cell
        last_before = getattr(sys, "last_value", None)  # (IPython keeps the last error shown there)
        try:
            if stopped:  # the stop button was pressed before it began
                raise KeyboardInterrupt
            try:
                take_inputs(h, msg.buffers, self.reader, ns, self.holdings)  # names that share, sharing again
            except SerializationError as e:
                self._error(e)
                status = "error"
                return
            t1 = time.monotonic()
            timings["load"] = t1 - t0
            self.shell.execution_count = h.get("exec_count", self.shell.execution_count)
            before = before_cell(ns)
            self.mirrors.began()
            if self.telemetry is not None:
                self.telemetry.start()
            try:
                # no history stored here: the kernel numbers the cells (execution_count above, the
                # traceback's "Cell In[n]") and sends its input history with a cell that reads it
                # (storing inputs costs ~0.1 ms a cell).  A cell seen before is not compiled again.
                comm, call = h.get("comm"), h.get("call")
                if call is not None:  # a function's call (calls.py)
                    result = self.calls.run(self.shell, call, msg.buffers, self.reader)
                elif comm is None:
                    self.shell.locate(h["code"], h.get("file"), h.get("history"))
                    result = self.shell.run_cell_fast(h["code"])
                else:  # the frontend's message to a comm here, handled as a local kernel would
                    result = self.shell.kernel.handle_comm(comm, msg.buffers)
            finally:
                self.executing = None
                if self.telemetry is not None:
                    telemetry = self.telemetry.stop()
            t2 = time.monotonic()
            timings["exec"] = t2 - t1
            err = (result.error_before_exec or result.error_in_exec) if result is not None else None
            if err is not None:
                status = "interrupted" if isinstance(err, KeyboardInterrupt) else "error"
                if not self._send_error_object(err) and isinstance(err, MemoryError):
                    self._error(err)  # memory ran out for its traceback too: the cell still says why it failed
            packer = serialization.Packer(shm_pool=self.out_pool if h.get("shm") else None)
            if h.get("call") is not None:
                outputs, buffers = calls.pack_value(h["call"], result, packer), packer.buffers
            else:
                outputs, buffers = pack_results(h, cell, ns, self.holdings, packer, before), packer.buffers
            timings["post"] = time.monotonic() - t2
        except KeyboardInterrupt as e:
            status = "interrupted"
            self._error(e)
        except BaseException as e:  # our own failure must still end the cell, with its cause
            status = "error"
            self._error(_memory_error(e, last_before) or e)
        finally:
            self.executing = None
            self.ran += 1
            # when it ended on this machine's clock (the ledger's): the keep-warm idle between two
            # cells is the worker's, not the kernel's view of it (billing.idle_after); a lane
            # cell's report carries it too (lane_cells.ended_at)
            timings["ended_at"] = time.time()
            if t_received is not None:  # a lane cell: no backend to time it, so the worker does
                timings["run"] = time.monotonic() - t_received
                self._owe_report(h, status, timings, t_received + timings["run"])
            self.fd_output.drain()  # what reached fds 1 and 2 goes out before `done`
            # the results ride on the final event: a warm cell costs one message per hop
            returned = self.reader.drain_returned()  # input segments whose values died here
            moved = self.workdir.moved()  # the cell changed directory: the kernel follows
            if moved and self.mirrors.root is not None:
                moved = self.mirrors.kernel_path(moved)  # in the mirror: the kernel's own path
            files = {}
            if self.mirrors.current is not None:  # what the cell changed in the mirrored directory
                files, file_buffers = self.mirrors.after()
                for e in files.get("put", ()):
                    e[4] += len(buffers)
                buffers = [*buffers, *file_buffers]
            self.emitter.end(
                messages.done(cell, status, timings, returned=returned, **outputs,
                              **({"telemetry": telemetry} if telemetry else {}),
                              **({"cwd": moved} if moved else {}), **({"files": files} if files else {})),
                buffers,
            )
            self.out_pool.lent(self.session)

    def _directory(self, h: dict, buffers: list, assembly=None) -> tuple[str | None, bool]:
        """(the directory the cell runs in, whether it needs the kernel's files sent first): the
        kernel's own where this worker sees it, else its mirror here (mirror.py), its files written
        as they arrive where the request is still arriving (``assembly``)."""
        sync = h.get("sync")
        if sync is not None:
            path = self.mirrors.receive(sync, buffers, assembly)
            if not sync.get("base"):
                self.workdir.entered = None  # made anew (the worker may have been in it): enter it again
            return path, path is None
        self.mirrors.root = None
        cwd = h.get("cwd")
        if cwd is None or cwd == self.workdir.entered:
            return cwd, False  # the directory of the last cell: no system call (a warm cell's path)
        if self.sync_files or not self.workdir.sees(cwd, h.get("cwd_id")):
            # a spawned call runs where the worker is: the kernel that could send the directory may be gone
            return (cwd, False) if (h.get("call") or {}).get("job") else (None, True)
        return cwd, False

    def _error(self, e: BaseException) -> None:
        self.emitter.event(
            {
                "type": messages.ERROR,
                "ename": type(e).__name__,
                "evalue": str(e),
                "traceback": [f"{type(e).__name__}: {e}"],
            }
        )

    def _send_error_object(self, err: BaseException) -> bool:
        """The exception itself, pickled, so the kernel can re-raise the real class when it can;
        False when it does not pickle."""
        try:
            p = serialization.pickle_value("<exception>", err)
        except SerializationError:
            return False
        packer = serialization.Packer()
        spec = packer.pack(p)
        self.emitter.event({"type": messages.ERROR, "pickled": spec}, packer.buffers)
        return True


def _arrived(assembly) -> bool:
    """Wait for the rest of a request handed over as it arrived (None: it came whole); False when
    it never will: its connection dropped (the backend fails the cell: the worker said it lacks it)
    or it was malformed (the worker exits)."""
    if assembly is None:
        return True
    assembly.abandon()  # (the files are written, or will not be: the rest of them is only read)
    try:
        assembly.wait()
    except framing.Incomplete:
        return False
    return True


def _memory_error(e: BaseException, last_before) -> MemoryError | None:
    """The MemoryError behind ``e``, our own failure handling a cell's error: showing the cell's
    MemoryError ran out of memory too, and what came out was a SystemError that hid it."""
    last = getattr(sys, "last_value", None)
    if last is not last_before and isinstance(last, MemoryError):
        return last
    while e is not None:
        if isinstance(e, MemoryError):
            return e
        e = e.__context__
    return None


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
