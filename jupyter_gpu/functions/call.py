"""One function call's run, on the kernel's session: the same steps as a `%%gpu` cell (cell.py's
pack -> send_and_drain), with ``call`` in the request instead of code.

- The function is pickled by value each call (a notebook's function, with the globals it reads:
  one that changed goes again); a worker that holds the same pickle (by hash) gets only its hash.
  Its defining cell's text goes along, so its frames in a remote traceback say ``Cell In[n]``.
- Its output streams into the calling cell as a cell's does (the notebook's sink).
- Its value comes back as ``done.result``, never into the namespace; its exception is raised here
  (the user's own type where it unpickles, else a same-named stand-in) with the remote traceback.
- Its footer is not shown per call: the calls a cell made are summed into one footer at the end of
  that cell (``post_run_cell``), and each is a record of the session (`%gpu cost`, the budget).
- ``starmap``: the items go in batches (one request each), read from the iterable as they go, one
  batch in flight (bounded memory for any generator), results in input order.
"""
from __future__ import annotations

import linecache
import sys
import time

from jupyter_gpu._client import driver
from jupyter_gpu._wire import messages, serialization
from jupyter_gpu.cost import footer
from jupyter_gpu.errors import ConnectionLost, GpuError
from jupyter_gpu.functions import fanout, handshake
from jupyter_gpu.functions.function import Function, batches
from jupyter_gpu.functions.progress import Progress, known_total
from jupyter_gpu.notebook import cell
from jupyter_gpu.notebook.cell_options import CellOptions
from jupyter_gpu.notebook.publish import Publisher
from jupyter_gpu.notebook.remote_values import RemoteValue
from jupyter_gpu.notebook.sink import NotebookSink

BATCH = 256  # map items a request: ~0.05 ms of the worker's time each for a trivial function, so
# one request's ~1 ms of overhead is spread thin, and a generator's items are read 256 at a time


class ItemFailed(GpuError):
    """A map item raised (without return_exceptions): which one, and its exception as the cause."""

    code = "item_failed"


def remote(f: Function, args: tuple, kwargs: dict):
    session = _session()
    value, _ = _run(session, f, {"args": serialization.pickle_value("<arguments>", (args, kwargs))})
    return value


def remote_gen(f: Function, args: tuple, kwargs: dict):
    """Generator: each value the worker's generator yields, as it comes."""
    session = _session()
    plan = _plan(session, f)
    fn, setup = _pickles(f)
    what = {"args": serialization.pickle_value("<arguments>", (args, kwargs)), "gen": True}
    for attempt in range(3):
        packed = _pack(session, plan, attempt, f, fn, what, setup)
        cell.send(session, packed)
        conn = packed.route or session.client
        sink = NotebookSink(session, packed.header["cell"], plan.gpu, plan.t0, plan.key)
        events = driver.drive_items(sink, conn, packed.header["cell"], backend=session.client, gpu=plan.gpu,
                                    image=plan.opts.image, t0=plan.t0, timeout=plan.opts.timeout)
        finished = False
        try:
            while True:
                try:
                    h, buffers = next(events)
                except StopIteration as end:
                    finished = True
                    outcome = end.value
                    break
                yield serialization.unpack("<item>", h["value"], buffers, session.reader)
        finally:
            if not finished:  # closed early (or an error here): the worker's generator stops, its events
                conn.send({"type": messages.INTERRUPT, "cell": packed.header["cell"]})  # drained, its cost kept
                _close(session, plan, packed, events, _hashes(fn, setup))
        if outcome is None:  # asked to send it again (before any value: a resend runs nothing)
            if sink.first is not None and plan.first is None:
                plan.first = sink.first
            session.forget(plan.key)
            continue
        _conclude(session, plan, packed, outcome, _hashes(fn, setup), False)
        return
    raise ConnectionLost("the backend asked repeatedly to send the call again")


def _close(session, plan, packed, events, hashes: list) -> None:
    """A remote generator its consumer stopped reading: the rest of its events, then its footer
    and ledger row as any call's (its interrupt is what the consumer asked for: not raised)."""
    try:
        while True:
            next(events)
    except StopIteration as end:
        if end.value is not None:
            try:
                _conclude(session, plan, packed, end.value, hashes, False)
            except KeyboardInterrupt:
                pass


def starmap(f: Function, items, kwargs: dict, return_exceptions: bool) -> "MapResult":
    return MapResult(f, items, kwargs, return_exceptions)


class MapResult:
    """A map's results, read as they come (iterate it once: in input order; a generator's items are
    read as it goes).  An item that raised is its exception in place with ``return_exceptions``
    (said once on stderr, with its index), else ItemFailed naming the index.  ``failed``: index ->
    (args, exception) of the items that raised; ``retry_failed()`` runs only those again."""

    def __init__(self, f: Function, items, kwargs: dict, return_exceptions: bool):
        self.f, self.items, self.kwargs, self.return_exceptions = f, items, kwargs, return_exceptions
        self.failed: dict[int, tuple] = {}
        self._started = False

    def __iter__(self):
        if self._started:
            raise RuntimeError("a map's results are read once (keep them: list(f.map(...)))")
        self._started = True
        return self._results(enumerate(self.items), known_total(self.items))

    def _batches(self, session, numbered, progress):
        """(batch, its results, the interrupt that stopped it or None), in input order: on the
        kernel's worker one batch at a time, or over max_workers workers (fanout.py)."""
        n = self.f.options.max_workers or 1
        read = progress.counted(batches(numbered, BATCH))
        if n > 1:
            for batch, results, stopped, _ in fanout.run_batches(session, self.f, read, self.kwargs, n, _run, progress):
                yield batch, results, stopped
            return
        for batch in read:
            packed = serialization.pickle_value("<map items>", [(tuple(a), self.kwargs) for _, a in batch])
            results, stopped = _run(session, self.f, {"items": packed, "return_exceptions": True},
                                    on_sent=progress.sent(batch))
            progress.ran(batch, results)
            yield batch, results, stopped

    def _results(self, numbered, total: int | None):
        session = _session()
        name = getattr(self.f.fn, "__qualname__", "?")
        progress = Progress(session, name, total)  # (progress.py: the live counts, a widget where one shows)
        complete = False
        try:
            for batch, results, stopped in self._batches(session, numbered, progress):
                for (index, args), (ok, value) in zip(batch, results):
                    if not ok:
                        self.failed[index] = (tuple(args), value)
                        if not self.return_exceptions:
                            raise ItemFailed(f"item {index} of {name}.map raised {type(value).__name__}: {value}") from value
                        Publisher(session.shell).stream("stderr", f"{name}.map: item {index} raised "
                                                        f"{type(value).__name__}: {value}\n")
                    yield value
                if stopped is not None:
                    raise stopped
            complete = True
        finally:
            progress.close(complete)  # its final counts (also when stopped, or left part-way)

    def retry_failed(self) -> dict:
        """Run the items that raised again: {index: its new result} (one that raises again: its
        exception, and it stays in ``failed``)."""
        todo, self.failed = self.failed, {}
        again = MapResult(self.f, [], self.kwargs, True)
        out = dict(zip(todo, again._results(((i, args) for i, (args, _) in todo.items()), len(todo))))
        self.failed = again.failed
        return out


def _session():
    from jupyter_gpu.notebook import extension

    if "jupyter_gpu_worker" in sys.modules:  # in a %%gpu cell or another call, on a worker
        raise RuntimeError("a jupyter_gpu.function's .remote/.map is called from the notebook's kernel; on a "
                           "worker (in a %%gpu cell or a call) call the function itself: f(x)")
    if extension.magics is None:
        try:
            ip = get_ipython()  # noqa: F821 - IPython's builtin in a kernel
        except NameError:
            raise RuntimeError("a jupyter_gpu.function is called remotely from a notebook's kernel "
                               "(IPython); here, call it directly") from None
        extension.load(ip)
    session = extension.magics.session
    calls_footer.install(session)
    return session


def _plan(session, f: Function) -> cell.CellPlan:
    o = f.options
    opts = CellOptions(gpu=o.gpu, keep_warm=o.keep_warm, timeout=o.timeout, image=o.image, no_out=True)
    gpu, fell_back, key = cell.placement(session, opts)
    keep_warm = opts.keep_warm if opts.keep_warm is not None else session.defaults.keep_warm
    return cell.CellPlan("", opts, gpu, key, keep_warm, [], frozenset(), frozenset(), cell.shared_memory(session),
                         session.cell_number(), time.monotonic(), session.new_cell_id(), fell_back)


def _run(session, f: Function, what: dict, on_sent=None):
    """Run one request of ``f`` (``what``: its pickled args, or a batch of items): (its value, the
    KeyboardInterrupt that stopped a batch part-way, or None).  ``on_sent(conn, cell)``: told where
    each attempt goes (a fan-out's stop press interrupts it there)."""
    plan = _plan(session, f)
    fn, setup = _pickles(f)
    for attempt in range(3 + f.options.retries):
        packed = _pack(session, plan, attempt, f, fn, what, setup)
        if on_sent is not None:
            on_sent(packed.route or session.client, packed.header["cell"])
        outcome = cell.send_and_drain(session, plan, packed)
        if outcome is None:
            continue
        done = outcome.done
        if done.get("status") in ("killed", "lost") and attempt < f.options.retries:
            continue  # its worker died: run it again (retries=)
        return _conclude(session, plan, packed, outcome, _hashes(fn, setup), "items" in what)
    raise ConnectionLost("the backend asked repeatedly to send the call again")


def _pickles(f: Function) -> tuple:
    """The function's pickle, and its setup's (None without one): made each call (the globals
    they read may have changed since the last)."""
    fn = serialization.pickle_value(f"<function {getattr(f.fn, '__qualname__', '?')}>", f.fn)
    setup = serialization.pickle_value("<setup>", f.options.setup) if f.options.setup is not None else None
    return fn, setup


def _hashes(fn, setup) -> list:
    """What a worker holds once a call of them ran there (``Held.functions``)."""
    return [fn.hash, *([setup.hash] if setup else [])]


def _pack(session, plan, attempt: int, f: Function, fn, what: dict, setup=None) -> cell.Packed:
    def add_call(header: dict, packer, held) -> None:
        header.pop("file", None)  # no code: what the worker runs is ``call``
        call = {"name": getattr(f.fn, "__qualname__", "?")}  # (the ledger's, the worker's messages)
        if fn.hash in held.functions:
            call["fn_hash"] = fn.hash
            header["expect_worker"] = held.worker  # the one holding it, or the call comes back
        else:
            call["fn"] = packer.pack(fn)
            call["env"] = handshake.environment(f.fn)  # compared there before the function is loaded
            source = _source(session.shell, f.fn)
            if source:
                call["source"] = source
        if setup is not None:  # run once per worker: its value is held there by this hash
            call["setup"] = {"h": setup.hash} if setup.hash in held.functions else packer.pack(setup)
            if setup.hash in held.functions:
                header["expect_worker"] = held.worker
        for key, value in what.items():
            call[key] = packer.pack(value) if isinstance(value, serialization.Pickled) else value
        header["call"] = call

    # (packed before the notebook's files: a sync's are the request's last buffers, a large one read
    # as it is sent after the others - a call's packed after them had its buffer numbers)
    return cell.pack(session, plan, attempt, more=add_call)


def _source(shell, fn) -> list | None:
    """[file, cell number, text] of the notebook cell that defined ``fn`` (None: not a cell's); a
    ``@jupyter_gpu.cls`` method's: its class's cell."""
    fn = getattr(fn, "__jupyter_gpu_source__", fn)
    code = getattr(fn, "__code__", None)
    file = getattr(code, "co_filename", None)
    number = getattr(getattr(shell, "compile", None), "_filename_map", {}).get(file)
    if number is None:
        return None
    lines = linecache.getlines(file)
    return [file, number, "".join(lines)] if lines else None


def _conclude(session, plan, packed, outcome, hashes: list, batch: bool):
    done = outcome.done
    cell.started_by(done, plan.first)
    session.remember(plan.key, packed.held, done, {}, outcome, frozenset(), True)
    held = session.held.get(plan.key)
    ran = "load" in (done.get("timings") or {})
    if held is not None and ran:
        held.functions.update(hashes)  # the function (and its setup) are held there now
    wall = time.monotonic() - plan.t0
    f = footer.build(done, wall, {"sent_bytes": packed.size, "received_bytes": outcome.received}, session.footers)
    owner = getattr(session, "owner", None)  # a fan-out's extra session (fanout.py): the kernel's records it
    if owner is None:
        session.record(f)
        calls_footer.add(session, f)
    else:
        session.footers.append(f)  # (its own worker's keep-warm idle is counted from its own footers)
        with owner.lock:
            owner.record(f)
        calls_footer.add(owner, f)
    value, error = value_of(session, done, outcome, plan.gpu)
    if error is not None:
        if batch and isinstance(error, KeyboardInterrupt) and value is not None:
            return value, error  # the items that ran, then the interrupt
        raise error
    return value, None


def value_of(session, done: dict, outcome, gpu: str) -> tuple:
    """(the call's value, its exception or None) from its ``done``: the value unpickled, or a
    reference to it where it stayed on the worker."""
    value, error = None, outcome.exception(done)
    spec = done.get("result")
    if spec is not None:
        try:
            value = serialization.unpack("<result>", spec, outcome.buffers, session.reader)
        except serialization.SerializationError as e:
            raise serialization.SerializationError(f"the function's value could not be brought back: {e}") from None
    elif done.get("result_ref") and error is None:  # it stays on the worker: a reference to it here
        r = done["result_ref"]
        value = RemoteValue(f"{r['t']} value", r["t"], done.get("device", gpu), done.get("worker") or "",
                            gpu, "", session.cell_number(), r.get("why", ""))
        value.ref = r["ref"]
    elif done.get("result_error") and error is None:
        raise serialization.SerializationError(f"the function's value could not be brought back: {done['result_error']}")
    return value, error


class calls_footer:
    """The calls a cell made, summed into one footer shown at the end of that cell."""

    @staticmethod
    def install(session) -> None:
        if getattr(session, "_calls_hooked", False):
            return
        session._calls_hooked = True
        session.cell_calls = []

        def post_run_cell(result=None):
            calls, session.cell_calls = session.cell_calls, []
            if calls:
                # what the cell printed here after its calls is still in the kernel's stream buffers:
                # out first, so the footer is the cell's last output (as a %%gpu cell's is)
                sys.stdout.flush()
                sys.stderr.flush()
                Publisher(session.shell).footer(footer.bundle(footer.summed(calls)))

        session.shell.events.register("post_run_cell", post_run_cell)

    @staticmethod
    def add(session, f: dict) -> None:
        session.cell_calls.append(f)
