"""Run one `%%gpu` cell: ship its inputs, relay its events as they come, bring its names back.

The cell's own thread does everything: it sends the request, then blocks on the connection and
publishes each event under the cell's parent header until the final event.  A stop-button press
(SIGINT) while it waits becomes an interrupt request; a second one asks the backend to kill the
worker.  The cell keeps draining events either way, so no output is lost.
"""
from __future__ import annotations

import atexit
import os
import signal
import threading
import time
import uuid

from . import devices, footer, lane, protocol, serialization, shm, stdin
from .client import BackendClient
from .embedded import ensure_backend
from .budget import CellBudget, run_limit
from .errors import ConnectionLost, RemoteValueLost, SerializationError, from_failure
from .held import Held, Lost
from .images import DEFAULT_IMAGE, pool_key
from .live import LiveStatus
from .names import analyse, inputs_for
from .publish import Publisher
from .outcome import CellOutcome
from .request import CellOptions, nested_magic, remote_limits, remote_source
from .remote import RemoteValue

POLL = 0.05  # how often the waiting thread looks at the interrupt flag


def _kernel_id() -> str:
    try:
        from ipykernel.connect import get_connection_file

        name = os.path.basename(get_connection_file())
        return name.removeprefix("kernel-").removesuffix(".json")[:36]
    except Exception:
        return "kernel"


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
        self.host_id = shm.host_id()
        self.pool: shm.SegmentPool | None = None
        self.reader = shm.SegmentReader()
        self._interrupts = 0
        self._closing_registered = False
        self.fell_back: str | None = None  # the GPU spec the last cell asked for, when it fell back
        self._cells = 0  # cells this kernel ran: their ids
        self._names_cache: dict[str, tuple[frozenset, frozenset]] = {}  # cell source -> (reads, binds)

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
        for gpu in list(self.held):
            self.forget(gpu)
        return self.client

    def choose_gpu(self, requested: str | None) -> str:
        """The GPU type a cell runs on: the first of its fallback list the backend offers."""
        client = self.connect()
        spec = requested or self.defaults.gpu or client.welcome.get("default_gpu", "cpu")
        offers = client.welcome.get("offers", [])
        # $JUPYTER_GPU_FALLBACK comes last; "A100:2" where the backend gives a worker two (welcome's devices)
        gpu = devices.choose(devices.with_fallback(spec), offers, client.welcome.get("devices") or 1)
        self.fell_back = None if devices.split(gpu)[0] in {n for n, _ in devices.parse(spec)} else spec
        if self.fell_back:  # said in the cell's output and recorded in its footer (`fallback_from`)
            Publisher(self.shell).stream("stderr", f"jupyter-gpu: {spec} is not offered here "
                                         f"(offered: {', '.join(offers)}); running on {gpu} ({devices.FALLBACK_ENV})\n")
        return gpu

    def shares_host(self) -> bool:
        return self.host_id is not None and self.client.welcome.get("host_id") == self.host_id

    def request(self, header: dict, reply_type: str, timeout: float = 30.0) -> dict:
        client = self.connect()
        client.send(header)
        deadline = time.monotonic() + timeout
        while True:
            msg = client.recv(timeout=max(0.0, deadline - time.monotonic()))
            if msg is None:
                raise ConnectionLost(f"no {reply_type} from the backend within {timeout:.0f} s")
            if msg.type == reply_type:
                return msg.header
            if msg.type == protocol.FAILURE:
                raise from_failure(msg.header)

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.send({"type": protocol.RELEASE})  # no need to wait for the reply
            except Exception:
                pass
            self.client.close()
            self.client = None
        if self.pool is not None:
            self.pool.close()

    # -- a cell ----------------------------------------------------------------------------------
    def run_cell(self, cell_source: str, opts: CellOptions) -> dict:
        client = self.connect()
        gpu = self.choose_gpu(opts.gpu)
        opts.image = opts.image or self.defaults.image or DEFAULT_IMAGE
        key = pool_key(gpu, opts.image)  # what the kernel holds is per (GPU type, image)
        opts.max_cost = run_limit(opts.max_cost, gpu, self.footers)  # what `jupyter-gpu run --max-cost` left
        keep_warm = opts.keep_warm if opts.keep_warm is not None else self.defaults.keep_warm
        ns = self.shell.user_ns
        reads, binds = self._names_of(cell_source)
        names = opts.inputs if opts.inputs is not None else inputs_for(reads, ns)
        for n in names:
            if n not in ns:
                raise NameError(f"name '{n}' given to --in is not defined")
        free = reads - binds  # read before (or without) being bound here
        lost = self.lost.get(key, {})
        for n in sorted(free):
            if n not in ns and n in lost and n not in self.held.get(key, Held()).remote_only:
                raise RemoteValueLost(lost[n].explain(n))
        use_shm = self.shares_host()
        if use_shm and self.pool is None:
            self.pool = shm.SegmentPool()  # closed by close() at exit; a killed kernel's at the next sweep
        exec_count = self.cell_number()
        t0 = time.monotonic()
        self._cells += 1
        base = f"{self.id}-{self._cells}"  # unique in the ledger: the session id is (uuid4 costs ~20 us a cell)
        # at most: the lane (its worker may have retired), the backend, and a resend through it
        for attempt in range(3):
            held = self.held.setdefault(key, Held())
            packer = serialization.Packer(shm_pool=self.pool if use_shm else None)
            inputs, keep, sent_hashes = self._pack_inputs(names, held, packer)
            # values only the worker holds: the backend must confirm it is still the same worker
            needs = sorted(n for n in free if n not in ns and n in held.remote_only)
            header = {
                "type": protocol.EXECUTE,
                "cell": f"{base}.{attempt}",
                "code": remote_source(opts.line, cell_source),
                "gpu": gpu,
                "image": opts.image,
                "exec_count": exec_count,
                "inputs": inputs,
                "keep": keep,
                "expect_worker": held.worker if keep or needs else None,
                "binds": sorted(binds),
                "out": opts.out,
                "no_out": opts.no_out,
                **remote_limits(opts.keep_remote),
                "shm": use_shm,
                "keep_warm": keep_warm,
                # the worker's segments whose values died here: it may reuse them
                "returned": self.reader.drain_returned(),
            }
            route = self._lane(held)
            outcome = None
            try:
                if route is not None:
                    header["session"] = self.id
                    try:
                        sent = route.send(header, packer.buffers) + packer.shm_bytes
                        outcome = self._drain(header["cell"], gpu, t0, opts, route)
                    except lane.LaneClosed:
                        outcome = self._lane_lost(held, header["cell"], gpu)
                        held.drop_lane()
                        if outcome is None:  # it retired before reading the cell: ask the backend
                            continue
                    else:
                        outcome.done.update(worker=held.worker, gpu=gpu, device=held.device, cold=False,
                                            keep_warm=keep_warm if keep_warm is not None else held.keep_warm,
                                            lane=held.lane, route="lane", pool=held.pool, image=opts.image)
                else:
                    sent = client.send(header, packer.buffers) + packer.shm_bytes
                    outcome = self._drain(header["cell"], gpu, t0, opts, client)
            finally:
                if self.pool is not None and (outcome is None or not outcome.done.get("worker")):
                    self.pool.reclaim(held.worker)  # nobody maps what this attempt lent
            if outcome is None:  # the worker holding our values is gone: send everything again
                self.forget(key)
                for n in needs:
                    raise RemoteValueLost(self.lost[key][n].explain(n))
                continue
            break
        else:
            raise ConnectionLost("the backend asked repeatedly to resend the cell's inputs")
        done = outcome.done
        self._remember(key, held, done, sent_hashes, outcome, binds, opts)
        wall = time.monotonic() - t0
        f = footer.build(done, wall, {"sent_bytes": sent, "received_bytes": outcome.received})
        if self.fell_back:
            f["fallback_from"] = self.fell_back
        self.last_footer = f
        self.footers.append(f)
        error = outcome.exception(done)
        if error is None:
            Publisher(self.shell).display(footer.bundle(f), {})
            return f
        # the kernel publishes the error output after the magic raises; the footer must still be
        # the cell's last output, so it goes out once the cell has finished (post_run_cell)
        self._footer_after_cell(footer.bundle(f))
        raise error

    def _names_of(self, cell_source: str) -> tuple[frozenset, frozenset]:
        """(names read, names bound) of a cell.  Its static input transforms are a pure function
        of the text, so a cell run again is not tokenised and parsed again (~0.15 ms); a one-line
        cell may also get prefilter's dynamic transforms (autocall), which read the namespace."""
        found = self._names_cache.get(cell_source)
        if found is not None:
            return found
        # under a nested cell magic, the names are those of its body (Python for %%time, %%timeit,
        # %%capture; anything else does not parse and has none)
        python = cell_source.lstrip(" \t\n").partition("\n")[2] if nested_magic(cell_source) else cell_source
        try:
            reads, binds = analyse(self.shell.transform_cell(python))
        except Exception:  # SyntaxError or a failing IPython transform
            return frozenset(), frozenset()  # the worker reports the error with the cell's line numbers
        found = frozenset(reads), frozenset(binds)
        if "\n" in cell_source.strip() or not self.shell.autocall:
            if len(self._names_cache) >= 256:
                self._names_cache.clear()
            self._names_cache[cell_source] = found
        return found

    def _footer_after_cell(self, bundle: dict) -> None:
        events = self.shell.events
        publisher = Publisher(self.shell)

        def publish(result=None):
            events.unregister("post_run_cell", publish)
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
        except (OSError, protocol.ProtocolError):  # LaneClosed included: nothing was sent
            held.drop_lane()
            return None
        return conn

    def _lane_lost(self, held: Held, cell: str, gpu: str):
        """The lane broke after the cell was sent.  None: the worker had retired without reading
        it (go through the backend); else the outcome of a cell that died with its worker."""
        reply = self.request({"type": protocol.LANE_LOST, "cell": cell, "gpu": gpu, "worker": held.worker},
                             protocol.LANE_LOST_REPLY)
        if not reply.get("ran"):
            return None
        out = CellOutcome()
        out.error({"ename": "WorkerLost", "evalue": reply["message"]}, [])
        out.done = {"type": protocol.DONE, "cell": cell, "status": reply["status"], "timings": {},
                    "worker": held.worker, "gpu": gpu, "device": reply.get("device", held.device), "cold": False}
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
        came_back = set(outcome.hashes)
        left_there = set(binds) if opts.no_out else set(binds) - came_back
        lost = self.lost.get(gpu, {})
        for name in came_back | left_there:
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
        for ref in outcome.refs:
            ref.worker, ref.gpu, ref.device = worker, gpu, done.get("device", gpu)

    def cell_number(self) -> int:
        """The running cell's number (In[n]).  IPython 9 has already counted it in execution_count,
        older versions had not; the input history holds it either way."""
        hist = getattr(self.shell.history_manager, "input_hist_raw", None)
        if hist:
            return len(hist) - 1
        return self.shell.execution_count

    def _pack_inputs(self, names, held: Held, packer) -> tuple[dict, dict, dict]:
        ns = self.shell.user_ns
        inputs, keep, hashes = {}, {}, {}
        for name in names:
            value = ns[name]
            if isinstance(value, RemoteValue):
                if held.worker == value.worker and held.values.get(name) == value.hash:
                    keep[name] = value.hash
                    continue
                raise RemoteValueLost(Lost(value.cell, value.worker, value.device, held.keep_warm).explain(name))
            p = serialization.pickle_value(name, value)
            hashes[name] = p.hash
            if held.worker is not None and held.values.get(name) == p.hash:
                keep[name] = p.hash
            else:
                inputs[name] = packer.pack(p)
        return inputs, keep, hashes

    def _drain(self, cell: str, gpu: str, t0: float, opts: CellOptions, conn):
        """Publish the cell's events (read from ``conn``: the backend or the worker's lane) until
        its final one.  None means: resend the inputs."""
        pub = Publisher(self.shell)
        pub.begin()
        prefix = f"jgpu-{self.id}-"
        live = LiveStatus(pub, f"{prefix}live-{cell}", gpu, t0)
        budget = CellBudget.for_cell(opts.max_cost, gpu, t0)
        if budget is not None and budget.note():
            pub.stream("stderr", budget.note())
        out = CellOutcome()
        kernel_sigint = self._trap_sigint()  # the kernel's own handler, None off the main thread
        sent_interrupts = 0
        try:
            while True:
                now = time.monotonic()
                if opts.timeout and now - t0 > opts.timeout and self._interrupts == 0:
                    self._interrupts = 1  # --timeout: the same path as the stop button
                over = budget.exceeded(now) if budget is not None and self._interrupts == 0 else None
                if over:
                    pub.stream("stderr", over)
                    self._interrupts = 1  # --max-cost: the same path as the stop button
                elif budget is not None and budget.again(now):  # one sent during a cold start is dropped
                    conn.send({"type": protocol.INTERRUPT, "cell": cell})
                wait = max(0.0, live.next_tick - now)
                if kernel_sigint is not None:
                    wait = min(wait, POLL)
                try:
                    msg = conn.recv(timeout=wait)
                except KeyboardInterrupt:  # only off the main thread, where SIGINT cannot be trapped
                    self._interrupts += 1
                    msg = None
                if self._interrupts > sent_interrupts:
                    sent_interrupts = self._interrupts
                    if sent_interrupts == 1:
                        conn.send({"type": protocol.INTERRUPT, "cell": cell})
                    else:  # only the backend can kill a worker
                        self.client.send({"type": protocol.KILL, "cell": cell, "gpu": gpu, "image": opts.image})
                live.tick()
                if msg is None:
                    continue
                h = msg.header
                if h.get("cell") not in (cell, None):
                    continue  # a late event of an earlier attempt
                kind = h["type"]
                if kind == protocol.STREAM:
                    pub.stream(h["name"], h["text"])
                elif kind == protocol.DISPLAY:
                    if h.get("kind") == "execute_result":
                        pub.execute_result(h["data"], h["metadata"], self.cell_number())
                    else:
                        transient = dict(h.get("transient") or {})
                        if "display_id" in transient:  # namespaced: never collides with local ids
                            transient["display_id"] = prefix + str(transient["display_id"])
                        pub.display(h["data"], h["metadata"], transient, h.get("update", False))
                elif kind == protocol.CLEAR_OUTPUT:
                    pub.clear_output(h.get("wait", False))
                elif kind == protocol.INPUT_REQUEST:
                    conn.send({**stdin.reply_to(self.shell, h, kernel_sigint), "cell": cell})
                elif kind == protocol.ERROR:
                    out.error(h, msg.buffers)
                elif kind == protocol.PHASE:
                    live.show(h["phase"], h.get("position"), h.get("detail"))
                    if budget is not None:
                        budget.phase(h["phase"], time.monotonic())
                elif kind == protocol.RESEND:
                    return None
                elif kind == protocol.FAILURE:
                    live.clear()
                    raise from_failure(h)
                elif kind == protocol.DONE and h.get("status") != "resend":
                    live.clear()
                    out.received += protocol.payload_size(h)
                    self._take_results(h, msg.buffers, out, pub)
                    out.done = h
                    return out
        finally:
            if kernel_sigint is not None:
                signal.signal(signal.SIGINT, kernel_sigint)

    def _take_results(self, h: dict, buffers: list, out: "CellOutcome", pub: Publisher) -> None:
        ns = self.shell.user_ns
        def stays_remote(name: str, spec: dict, why: str) -> None:
            ns[name] = value = RemoteValue(name, spec.get("t", "?"), "", "", "", spec["h"], self.cell_number(), why)
            out.refs.append(value)  # its worker and device are filled in by _remember

        for name, spec in h.get("values", {}).items():
            try:
                ns[name] = serialization.unpack(name, spec, buffers, self.reader)
            except SerializationError as e:  # e.g. a CUDA tensor, and this kernel has no CUDA
                stays_remote(name, spec, str(e))  # not a failed cell, nor the cell's other names lost
            out.hashes[name] = spec["h"]
            out.received += sum(r["n"] for r in [spec["p"], *spec["b"]] if "shm" in r)
        for name, ref in h.get("refs", {}).items():  # the worker kept it (unpicklable, too large, --keep-remote)
            stays_remote(name, ref, ref.get("why", ""))
            out.hashes[name] = ref["h"]
        if h.get("missing"):
            pub.stream("stderr", f"jupyter-gpu: --out names not defined on the worker: {', '.join(h['missing'])}\n")

    def _trap_sigint(self):
        """Turn SIGINT into a counted request while we wait (only possible on the main thread);
        returns the handler it replaced (None off the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            return None
        self._interrupts = 0

        def on_sigint(signum, frame):
            self._interrupts += 1

        previous = signal.signal(signal.SIGINT, on_sigint)
        return previous if previous is not None else signal.default_int_handler  # None: not set from Python
