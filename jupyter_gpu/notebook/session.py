"""Run one `%%gpu` cell: ship its inputs, relay its events as they come, bring its names back.

The cell's own thread does everything: it plans the cell (where it runs, which names it ships),
sends it (unless early.py sent it as its request arrived), relays its events (relay.py) and
records what the worker now holds, then publishes the footer.
"""
from __future__ import annotations

import atexit
import os
import re
import time
import uuid
import warnings

from jupyter_gpu._wire import devices, lane, framing, messages, serialization, shm
from jupyter_gpu.notebook import early, relay
from jupyter_gpu.cost import footer
from jupyter_gpu._client.connection import BackendClient
from jupyter_gpu._client.embedded import ensure_backend
from jupyter_gpu.cost.limit import run_limit
from jupyter_gpu.errors import ConnectionLost, RemoteValueLost, from_failure
from jupyter_gpu.notebook.held import Held, Lost
from jupyter_gpu._wire.pools import DEFAULT_IMAGE, pool_key
from jupyter_gpu.notebook.names import analyse, inputs_for
from jupyter_gpu.notebook.publish import Publisher
from jupyter_gpu.notebook.outcome import CellOutcome
from jupyter_gpu.notebook.options import CellOptions, CellPlan, nested_binds, nested_magic, remote_limits, remote_source
from jupyter_gpu.notebook.remote import RemoteValue
from jupyter_gpu._wire import settings

def _kernel_id() -> str:
    try:
        from ipykernel.connect import get_connection_file

        name = os.path.basename(get_connection_file())
        return name.removeprefix("kernel-").removesuffix(".json")[:36]
    except Exception:
        return "kernel"


_EXIT_WARNING = "To exit: use 'exit', 'quit', or Ctrl-D."  # IPython's, after a SystemExit
RELEASE_WAIT = 3.0  # s: how long an exiting kernel waits for the backend to stop its workers


def _ask(client: BackendClient, header: dict, reply_type: str, timeout: float) -> dict:
    """Send ``header`` and return the backend's ``reply_type`` answer (other events are passed over)."""
    client.send(header)
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
        self.fell_back: str | None = None  # the GPU spec the last cell asked for, when it fell back
        self._cells = 0  # cells this kernel ran: their ids
        self._names_cache: dict[str, tuple[frozenset, frozenset]] = {}  # cell source -> (reads, binds)
        self._gpu_cache: dict[tuple, tuple[str, str | None]] = {}  # (spec, fallback) -> _gpu_for's answer
        self.early: early.Sent | None = None  # a cell sent as its execute_request arrived (early.py)
        self.sent_on_arrival = 0  # cells early.py sent before their magic ran
        self.stop_first = False  # the stop button was pressed as early.py sent the cell: it raises at once

    # -- connection ----------------------------------------------------------------------------
    def connect(self, url: str | None = None, token: str | None = None) -> BackendClient:
        if self.client is not None and self.client.open and url is None:
            return self.client
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
        for gpu in list(self.held):
            self.forget(gpu)
        return self.client

    def choose_gpu(self, requested: str | None) -> str:
        """The GPU type a cell runs on: the first of its fallback list the backend offers."""
        gpu, self.fell_back = self._gpu_for(requested)
        if self.fell_back:
            self._say_fallback(self.fell_back, gpu)
        return gpu

    def _gpu_for(self, requested: str | None) -> tuple[str, str | None]:
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

    def _say_fallback(self, spec: str, gpu: str) -> None:
        offers = self.client.welcome.get("offers", [])
        Publisher(self.shell).stream("stderr", f"jupyter-gpu: {spec} is not offered here "
                                     f"(offered: {', '.join(offers)}); running on {gpu} ({devices.FALLBACK_ENV})\n")

    def shares_host(self) -> bool:
        return self.host_id is not None and self.client.welcome.get("host_id") == self.host_id

    def request(self, header: dict, reply_type: str, timeout: float = 30.0) -> dict:
        return _ask(self.connect(), header, reply_type, timeout)

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

    # -- a cell ----------------------------------------------------------------------------------
    def plan(self, cell_source: str, opts: CellOptions, quiet: bool = False) -> "CellPlan | None":
        """What a cell needs before it is sent: where it runs and which names it ships.  Raises
        what the cell must fail with; quiet (sending before the magic runs): None instead of saying
        anything or failing, and the magic decides later."""
        gpu, fell_back = self._gpu_for(opts.gpu)  # connects first (the backend's offers decide)
        if quiet and fell_back:
            return None
        self.fell_back = fell_back
        if fell_back:  # said in the cell's output and recorded in its footer (`fallback_from`)
            self._say_fallback(fell_back, gpu)
        opts.image = opts.image or self.defaults.image or DEFAULT_IMAGE
        key = pool_key(gpu, opts.image)  # what the kernel holds is per (GPU type, image)
        opts.max_cost = run_limit(opts.max_cost, gpu, self.spent_usd)  # what `jupyter-gpu run --max-cost` left
        ns = self.shell.user_ns
        reads, binds = self._names_of(cell_source)
        names = opts.inputs if opts.inputs is not None else inputs_for(reads, ns)
        free = reads - binds  # read before (or without) being bound here
        missing = [n for n in names if n not in ns]
        lost = self.lost.get(key, {})
        gone = [n for n in sorted(free) if n not in ns and n in lost
                and n not in self.held.get(key, Held()).remote_only]
        if quiet and (missing or gone):
            return None
        for n in missing:
            raise NameError(f"name '{n}' given to --in is not defined")
        for n in gone:
            raise RemoteValueLost(lost[n].explain(n))
        use_shm = self.shares_host()
        if use_shm and self.pool is None:
            self.pool = shm.SegmentPool()  # closed by close() at exit; a killed kernel's at the next sweep
        keep_warm = opts.keep_warm if opts.keep_warm is not None else self.defaults.keep_warm
        self._cells += 1
        # unique in the ledger: the session id is (uuid4 costs ~20 us a cell)
        return CellPlan(cell_source, opts, gpu, key, keep_warm, names, free, binds, use_shm,
                        self.cell_number(), time.monotonic(), f"{self.id}-{self._cells}", fell_back)

    def run_cell(self, cell_source: str, opts: CellOptions) -> dict:
        if self.stop_first:  # as a local cell would have: the press came before it began
            self.stop_first = False
            raise KeyboardInterrupt
        sent = early.claim(self, cell_source, opts)
        plan = sent.plan if sent is not None else self.plan(cell_source, opts)
        # at most: the lane (its worker may have retired), the backend, and a resend through it
        for attempt in range(3):
            tried = self._attempt(plan, attempt, sent if attempt == 0 else None)
            if tried is not None:
                return self.conclude(plan, *tried)
        raise ConnectionLost("the backend asked repeatedly to resend the cell's inputs")

    def pack(self, plan: "CellPlan", attempt: int):
        """The request of one attempt at ``plan``: (held, packer, header, hashes of what it ships)."""
        held = self.held.setdefault(plan.key, Held())
        packer = serialization.Packer(shm_pool=self.pool if plan.use_shm else None)
        inputs, keep, sent_hashes, references = self._pack_inputs(plan.names, held, packer)
        opts = plan.opts
        header = {
            "type": messages.EXECUTE,
            "cell": f"{plan.base}.{attempt}",
            "code": remote_source(opts.line, plan.source),
            "gpu": plan.gpu,
            "image": opts.image,
            "exec_count": plan.exec_count,
            "inputs": inputs,
            "keep": keep,
            **({"references": references} if references else {}),  # held here as RemoteValues
            "expect_worker": held.worker if keep or plan.needs(self.shell.user_ns, held) else None,
            "binds": sorted(plan.binds),
            "out": opts.out,
            "no_out": opts.no_out,
            **remote_limits(opts.keep_remote),
            "shm": plan.use_shm,
            "keep_warm": plan.keep_warm,
            # the worker's segments whose values died here: it may reuse them
            "returned": self.reader.drain_returned(),
        }
        return held, packer, header, sent_hashes

    def _attempt(self, plan: "CellPlan", attempt: int, sent: "early.Sent | None"):
        """Send the cell (unless early.py already sent it) and drain its events: (held,
        outcome, bytes sent, hashes sent), or None when it must be sent again."""
        if sent is not None:
            held, packer, header, sent_hashes, route, size = sent.attempt
        else:
            held, packer, header, sent_hashes = self.pack(plan, attempt)
            route, size = self._lane(held), None
        outcome = None
        try:
            if route is not None:
                header["session"] = self.id
                try:
                    if size is None:
                        size = route.send(header, packer.buffers) + packer.shm_bytes
                    outcome = relay.drain(self, header["cell"], plan.gpu, plan.t0, plan.opts, route)
                except lane.LaneClosed:
                    outcome = self._lane_lost(held, header["cell"], plan.gpu)
                    held.drop_lane()
                    if outcome is None:  # it retired before reading the cell: ask the backend
                        return None
                else:
                    keep_warm = plan.keep_warm if plan.keep_warm is not None else held.keep_warm
                    # the backend did not see it run: the kernel says where it ran
                    messages.placed(outcome.done, worker=held.worker, gpu=plan.gpu, device=held.device, cold=False,
                                    keep_warm=keep_warm, lane=held.lane, pool=held.pool, image=plan.opts.image)
                    outcome.done["route"] = "lane"  # the footer's, not the wire's
            else:
                if size is None:
                    size = self.client.send(header, packer.buffers) + packer.shm_bytes
                outcome = relay.drain(self, header["cell"], plan.gpu, plan.t0, plan.opts, self.client)
        finally:
            if self.pool is not None and (outcome is None or not outcome.done.get("worker")):
                self.pool.reclaim(held.worker)  # nobody maps what this attempt lent
        if outcome is None:  # the worker holding our values is gone: send everything again
            self.forget(plan.key)
            for n in plan.needs(self.shell.user_ns, held):
                raise RemoteValueLost(self.lost[plan.key][n].explain(n))
            return None
        return held, outcome, size, sent_hashes

    def conclude(self, plan: "CellPlan", held: Held, outcome: CellOutcome, size: int, sent_hashes: dict,
                 raise_error: bool = True) -> dict:
        """Record what the cell left where, and publish its footer (its last output)."""
        done = outcome.done
        self._remember(plan.key, held, done, sent_hashes, outcome, plan.binds, plan.opts)
        wall = time.monotonic() - plan.t0
        f = footer.build(done, wall, {"sent_bytes": size, "received_bytes": outcome.received})
        if plan.fell_back:
            f["fallback_from"] = plan.fell_back
        self.last_footer = f
        self.footers.append(f)
        self.spent_usd += float(f.get("cost_usd") or 0.0)
        error = outcome.exception(done)
        if error is None or not raise_error:
            Publisher(self.shell).footer(footer.bundle(f))
            return f
        # the kernel publishes the error output after the magic raises; the footer must still be
        # the cell's last output, so it goes out once the cell has finished (post_run_cell)
        self._footer_after_cell(footer.bundle(f), quiet_exit=isinstance(error, SystemExit))
        raise error

    def _names_of(self, cell_source: str) -> tuple[frozenset, frozenset]:
        """(names read, names bound) of a cell.  Its static input transforms are a pure function
        of the text, so a cell run again is not tokenised and parsed again (~0.15 ms); a one-line
        cell may also get prefilter's dynamic transforms (autocall), which read the namespace."""
        found = self._names_cache.get(cell_source)
        if found is not None:
            return found
        # under a nested cell magic, the names are those of its body (Python for %%time, %%timeit,
        # %%capture; anything else does not parse and has none) and any its line binds
        nested = nested_magic(cell_source)
        python = cell_source.lstrip(" \t\n").partition("\n")[2] if nested else cell_source
        try:
            reads, binds = analyse(self.shell.transform_cell(python))
        except Exception:  # SyntaxError or a failing IPython transform
            reads, binds = (), ()  # the worker reports the error with the cell's line numbers
        found = frozenset(reads), frozenset(binds) | (nested_binds(cell_source) if nested else frozenset())
        if "\n" in cell_source.strip() or not self.shell.autocall:
            if len(self._names_cache) >= 256:
                self._names_cache.clear()
            self._names_cache[cell_source] = found
        return found

    def _footer_after_cell(self, bundle: dict, quiet_exit: bool = False) -> None:
        """quiet_exit: the cell raised SystemExit, whose warning IPython prints after it ("To exit:
        use 'exit', ..."); the worker's came with the cell's output, the kernel's would be a second."""
        events = self.shell.events
        publisher = Publisher(self.shell)
        if quiet_exit:
            warnings.filterwarnings("ignore", message=re.escape(_EXIT_WARNING), category=UserWarning)
            quieted = warnings.filters[0]

        def publish(result=None):
            events.unregister("post_run_cell", publish)
            if quiet_exit and quieted in warnings.filters:
                warnings.filters.remove(quieted)
            publisher.begin()  # what the kernel wrote while showing the error goes before the footer
            publisher.display(bundle, {})

        events.register("post_run_cell", publish)

    def _lane(self, held: Held):
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

    def _lane_lost(self, held: Held, cell: str, gpu: str):
        """The lane broke after the cell was sent.  None: the worker had retired without reading
        it (go through the backend); else the outcome of a cell that died with its worker."""
        reply = self.request({"type": messages.LANE_LOST, "cell": cell, "gpu": gpu, "worker": held.worker},
                             messages.LANE_LOST_REPLY)
        if not reply.get("ran"):
            return None
        out = CellOutcome()
        out.error({"ename": "WorkerLost", "evalue": reply["message"]}, [])
        out.done = messages.done(cell, reply["status"], worker=held.worker, gpu=gpu,
                                 device=reply.get("device", held.device), cold=False)
        return out

    def forget(self, gpu: str) -> None:
        """The worker of pool ``gpu`` (a pool key: GPU type, or GPU@image) is gone: what only it
        held is lost (and explained when used)."""
        held = self.held.pop(gpu, None)
        if held is not None:
            held.drop_lane()
        if held is not None and held.worker is not None:
            lost = self.lost.setdefault(gpu, {})
            for name, cell in held.remote_only.items():
                lost[name] = Lost(cell, held.worker, held.device, held.keep_warm)

    def _remember(self, gpu, held: Held, done: dict, sent_hashes: dict, outcome: "CellOutcome", binds, opts) -> None:
        """Record which values the worker now shares with us, so unchanged ones are not re-sent,
        and which it alone holds, so their loss can be explained."""
        worker = done.get("worker")
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
        left_there = (set(binds) if opts.no_out else set(binds) - came_back) - deleted
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
        held.values.update(sent_hashes)
        held.values.update(outcome.hashes)
        for name in deleted:  # sent, then deleted there
            held.values.pop(name, None)
        for ref in outcome.refs:
            ref.worker, ref.gpu, ref.device = worker, gpu, done.get("device", gpu)

    def cell_number(self) -> int:
        """The running cell's number (In[n]).  IPython 9 has already counted it in execution_count,
        older versions had not; the input history holds it either way."""
        hist = getattr(self.shell.history_manager, "input_hist_raw", None)
        if hist:
            return len(hist) - 1
        return self.shell.execution_count

    def _pack_inputs(self, names, held: Held, packer) -> tuple[dict, dict, dict, list]:
        ns = self.shell.user_ns
        inputs, keep, hashes, references = {}, {}, {}, []
        for name in names:
            value = ns[name]
            if isinstance(value, RemoteValue):
                if held.worker == value.worker and held.values.get(name) == value.hash:
                    keep[name] = value.hash
                    references.append(name)
                    continue
                raise RemoteValueLost(Lost(value.cell, value.worker, value.device, held.keep_warm).explain(name))
            p = serialization.pickle_value(name, value)
            hashes[name] = p.hash
            if held.worker is not None and held.values.get(name) == p.hash:
                keep[name] = p.hash
            else:
                inputs[name] = packer.pack(p)
        return inputs, keep, hashes, references
