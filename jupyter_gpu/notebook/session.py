"""What a kernel keeps between its `%%gpu` cells: its backend connection, what each worker holds
for it (and what was lost with a worker), its defaults and its footers.

A cell's own run reads in order in cell.py, which asks the session what it needs; the session's
methods are small, each about that lasting state.
"""
from __future__ import annotations

import atexit
import os
import threading
import time
import uuid

from jupyter_gpu._client.connection import BackendClient
from jupyter_gpu._client.embedded import ensure_backend
from jupyter_gpu._wire import devices, framing, lane, messages, settings, shm
from jupyter_gpu.errors import ConnectionLost, from_failure
from jupyter_gpu.notebook import comms
from jupyter_gpu.notebook.cell_options import CellOptions
from jupyter_gpu.notebook.environ import KernelEnviron
from jupyter_gpu.notebook.files import FileSync
from jupyter_gpu.notebook.publish import Publisher
from jupyter_gpu.notebook.remote_values import Held, Lost


def _kernel_id() -> str:
    try:
        from ipykernel.connect import get_connection_file

        name = os.path.basename(get_connection_file())
        return name.removeprefix("kernel-").removesuffix(".json")[:36]
    except Exception:
        return "kernel"


RELEASE_WAIT = 3.0  # s: how long an exiting kernel waits for the backend to stop its workers


def _ask(client: BackendClient, header: dict, reply_type: str, timeout: float, buffers=()) -> dict:
    """Send ``header`` and return the backend's ``reply_type`` answer (other events are passed over)."""
    client.send(header, buffers)
    deadline = time.monotonic() + timeout
    while True:
        msg = client.recv(timeout=max(0.0, deadline - time.monotonic()))
        if msg is None:
            raise ConnectionLost(f"no {reply_type} from the backend within {timeout:.0f} s")
        if msg.type == reply_type:
            return msg.header
        if msg.type == messages.FAILURE:
            raise from_failure(msg.header)


class KernelSession:
    """One kernel's connection to the backend and its view of the remote namespace."""

    def __init__(self, shell):
        self.shell = shell
        # unique per kernel *process*: a restarted kernel must get a fresh remote namespace
        self.id = f"{_kernel_id()[:8]}-{uuid.uuid4().hex[:8]}"
        self.client: BackendClient | None = None
        self._connecting = threading.Lock()  # preconnect's thread and a cell's connect: one at a time
        # per (GPU type, image) pool, keyed by images.pool_key ("cpu", "cpu@a"): two images never share values
        self.held: dict[str, Held] = {}  # pool key -> Held
        self.lost: dict[str, dict[str, Lost]] = {}  # pool key -> name -> where it was lost
        self.defaults = CellOptions()
        self.last_footer: dict | None = None
        self.footers: list[dict] = []  # every cell's footer, for `%gpu cost`
        self.spent_usd = 0.0  # what they cost together (the run budget's `spent`)
        self.host_id = shm.host_id()
        self.pool: shm.SegmentPool | None = None
        self.reader = shm.SegmentReader()
        self._closing_registered = False
        self._cells = 0  # cells this kernel ran: their ids
        self.names_memo: dict[str, tuple[frozenset, frozenset]] = {}  # cell source -> (reads, binds)
        self._gpu_cache: dict[tuple, tuple[str, str | None]] = {}  # (spec, fallback) -> gpu_for's answer
        self.early = None  # a cell.Sent: a cell sent as its execute_request arrived (early.py)
        self.sent_on_arrival = 0  # cells early.py sent before their magic ran
        self.stop_first = False  # the stop button was pressed as early.py sent the cell: it raises at once
        self.comms: dict = {}  # comm id -> comms.RemoteComm: comms that live on a worker (comms.py)
        self.files = FileSync()  # the kernel's directory, for workers that cannot see it (files.py)
        self.environ = KernelEnviron()  # the variables the notebook set, its code directories (environ.py)

    # -- connection ----------------------------------------------------------------------------
    def connect(self, url: str | None = None, token: str | None = None) -> BackendClient:
        if self.client is not None and self.client.open and url is None:
            return self.client
        with self._connecting:
            if self.client is not None and self.client.open and url is None:
                return self.client  # (connected by preconnect meanwhile)
            return self._connect(url, token)

    def preconnect(self) -> None:
        """Connect now, on a thread (starting the embedded backend when none is configured or
        running: 0.46-0.64 s of process start here), so that the first `%%gpu` cell finds its
        backend up; that cell's connect() waits for this one.  A failure is left for it to say."""
        if self.client is not None:
            return

        def run() -> None:
            try:
                self.connect()
            except Exception:
                pass  # (the first %%gpu cell connects again, and says why it cannot)

        threading.Thread(target=run, name="jupyter-gpu-preconnect", daemon=True).start()

    def _connect(self, url: str | None, token: str | None) -> BackendClient:
        if self.client is not None:
            self.client.close()
        if not self._closing_registered:
            atexit.register(self.close)  # a kernel that exits cleanly frees its workers at once
            self._closing_registered = True
        if url is not None:
            self.client = BackendClient(url, token or "", self.id)
        else:
            url, token = ensure_backend()
            try:
                self.client = BackendClient(url, token, self.id)
            except ConnectionLost:
                # the embedded backend may have been exiting (idle) just as we found it
                url, token = ensure_backend()
                self.client = BackendClient(url, token, self.id)
        self._gpu_cache.clear()  # what it offers may differ
        self.files.always = self.client.welcome.get("files") == "sync"
        for gpu in list(self.held):
            self.forget(gpu)
        return self.client

    def choose_gpu(self, requested: str | None) -> str:
        """The GPU type a cell runs on: the first of its fallback list the backend offers."""
        gpu, fell_back = self.gpu_for(requested)
        if fell_back:
            self.say_fallback(fell_back, gpu)
        return gpu

    def gpu_for(self, requested: str | None) -> tuple[str, str | None]:
        """(the GPU type, the spec asked for when that is a fallback, else None)."""
        welcome = self.connect().welcome
        spec = requested or self.defaults.gpu or welcome.get("default_gpu", "cpu")
        fallback = settings.FALLBACK.get()
        key = (spec, fallback)  # emptied when a new connection brings a new welcome
        known = self._gpu_cache.get(key)
        if known is not None:
            return known
        offers = welcome.get("offers", [])
        # $JUPYTER_GPU_FALLBACK comes last; "A100:2" where the backend gives a worker two (welcome's devices)
        gpu = devices.choose(devices.with_fallback(spec, fallback), offers, welcome.get("devices") or 1)
        found = gpu, None if devices.split(gpu)[0] in {n for n, _ in devices.parse(spec)} else spec
        if len(self._gpu_cache) >= 64:
            self._gpu_cache.clear()
        self._gpu_cache[key] = found
        return found

    def say_fallback(self, spec: str, gpu: str) -> None:
        offers = self.client.welcome.get("offers", [])
        Publisher(self.shell).stream("stderr", f"jupyter-gpu: {spec} is not offered here "
                                     f"(offered: {', '.join(offers)}); running on {gpu} ({devices.FALLBACK_ENV})\n")

    def parent(self) -> dict:
        """The kernel's request being served, as the worker's ``kernel.get_parent()`` gives it
        ({"header": ...}, dates as text); {} outside a kernel."""
        get_parent = getattr(getattr(self.shell, "kernel", None), "get_parent", None)
        header = (get_parent() or {}).get("header") if get_parent is not None else None
        if not header:
            return {}
        return {"header": self.jsonable_header(header)}

    @staticmethod
    def jsonable_header(header: dict) -> dict:
        """A Jupyter message header as the wire carries it (its date as text)."""
        return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in header.items()}

    def shares_host(self) -> bool:
        return self.host_id is not None and self.client.welcome.get("host_id") == self.host_id

    def request(self, header: dict, reply_type: str, timeout: float = 30.0, buffers=()) -> dict:
        return _ask(self.connect(), header, reply_type, timeout, buffers)

    def lane(self, held: Held):
        """The open lane to ``held``'s worker, or None (no lane granted, or it is gone)."""
        if held.lane is None or held.worker is None or not self.shares_host():
            return None
        conn = held.lane_conn
        try:
            if conn is not None and conn.readable(0):  # a closed lane reads as readable
                while conn.recv(0) is not None:
                    pass  # late events of an earlier cell
            if conn is None or conn.closed:
                conn = held.lane_conn = lane.connect(held.lane["path"], held.lane["secret"], self.id)
        except (OSError, framing.ProtocolError):  # LaneClosed included: nothing was sent
            held.drop_lane()
            return None
        return conn

    def close(self) -> None:
        """Free this kernel's workers (at exit).  The backend answers once they are gone and every
        cell they ran is in its ledger, so whatever reads the ledger once this kernel has exited
        (``jupyter-gpu advise --url`` after ``jupyter-gpu run``) finds them all."""
        client = self.client
        if client is not None:
            try:
                _ask(client, {"type": messages.RELEASE}, messages.STATUS_REPLY, RELEASE_WAIT)
            except Exception:
                pass  # the backend is gone, or slow: the kernel exits all the same
            client.close()
            self.client = None
        if self.pool is not None:
            self.pool.close()
        self.files.close()

    # -- its cells -------------------------------------------------------------------------------
    def new_cell_id(self) -> str:
        """A cell's id in the ledger, before an attempt's suffix: unique as the session id is
        (uuid4 costs ~20 us a cell)."""
        self._cells += 1
        return f"{self.id}-{self._cells}"

    def cell_number(self) -> int:
        """The running cell's number (In[n]).  IPython 9 has already counted it in execution_count,
        older versions had not; the input history holds it either way."""
        hist = getattr(self.shell.history_manager, "input_hist_raw", None)
        if hist:
            return len(hist) - 1
        return self.shell.execution_count

    def record(self, footer: dict) -> None:
        """A cell's footer: the last, one more for `%gpu cost`, and what it cost."""
        self.last_footer = footer
        self.footers.append(footer)
        self.spent_usd += float(footer.get("cost_usd") or 0.0)

    # -- what the workers hold ---------------------------------------------------------------------
    def forget(self, gpu: str) -> None:
        """The worker of pool ``gpu`` (a pool key: GPU type, or GPU@image) is gone: what only it
        held is lost (and explained when used)."""
        held = self.held.pop(gpu, None)
        if held is not None:
            held.drop_lane()
        if self.comms and held is not None and held.worker is not None:
            comms.worker_gone(self, gpu, held.worker)  # its widgets cannot answer: closed in the frontend
        if held is not None and held.worker is not None:
            lost = self.lost.setdefault(gpu, {})
            for name, cell in held.remote_only.items():
                lost[name] = Lost(cell, held.worker, held.device, held.keep_warm)

    def remember(self, gpu, held: Held, done: dict, sent_hashes: dict, outcome, binds, no_out: bool) -> None:
        """Record which values the worker now shares with us, so unchanged ones are not re-sent,
        and which it alone holds, so their loss can be explained (``outcome``: the cell's
        CellOutcome)."""
        worker = done.get("worker")
        if self.comms and worker is not None:
            comms.placed(self, gpu, worker)  # the comms its request opened live on that worker
        if done.get("status") in ("killed", "lost") or worker is None:
            self.forget(gpu)
            return
        if held.worker != worker:
            self.forget(gpu)
            held = self.held[gpu] = Held(worker)
        held.device, held.keep_warm = done.get("device", gpu), done.get("keep_warm")
        held.pool = done.get("pool") or held.pool
        if done.get("lane") and held.lane != done["lane"]:
            held.drop_lane()
            held.lane = done["lane"]
        came_back, deleted = set(outcome.hashes), set(outcome.deleted)
        # the worker times `load` once it has loaded every input (cells.py): a cell that failed to
        # load one (a module it cannot import) or was stopped before it began ran nothing, so it
        # holds none of what was sent and bound nothing; counted as held, a value it never loaded
        # went as `keep` with the next cell that read it, and came back as a `resend`
        ran = "load" in (done.get("timings") or {})
        left_there = (set(binds) if no_out else set(binds) - came_back) - deleted if ran else set()
        lost = self.lost.get(gpu, {})
        for name in came_back | left_there | deleted:
            lost.pop(name, None)
            held.remote_only.pop(name, None)
        for name in left_there:
            held.remote_only[name] = self.cell_number()
            held.values.pop(name, None)  # rebound there: the kernel's copy (if any) differs now
        if self.pool is not None:
            self.pool.lent(worker)
            self.pool.returned(done.get("returned", ()))
            self.pool.reclaim(worker)  # a previous worker is gone, and its mappings with it
        if ran:
            held.values.update(sent_hashes)
        held.values.update(outcome.hashes)
        for name in deleted:  # sent, then deleted there
            held.values.pop(name, None)
        for ref in outcome.refs:
            ref.worker, ref.gpu, ref.device = worker, gpu, done.get("device", gpu)
