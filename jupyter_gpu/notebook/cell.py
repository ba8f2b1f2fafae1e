"""One `%%gpu` cell's run, in order: plan -> pack -> send -> drain -> conclude.

`run_cell` is the magic's cell from its text to its footer, each step a call below it:
- plan: where the cell runs and which names it ships (asks the backend's offers first);
- pack: its request, with the inputs the worker does not hold already, for the worker's lane when
  there is one, else for the backend;
- send: write it;
- drain: its events into the notebook until its final one (the driver shared with function calls,
  _client/driver.py, handing them to the notebook's sink, sink.py);
- conclude: record what the worker holds now, publish the footer, raise the cell's error.
A warm cell is often planned, packed and sent as its request arrives, by the same steps (early.py);
`claim` takes it over in its magic, and `settle` ends one no magic claimed.  What lasts from cell to
cell (the connection, what each worker holds, the defaults, the footers) is the KernelSession's
(session.py).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from IPython.core.error import UsageError

from jupyter_gpu._client import driver
from jupyter_gpu._wire import lane, messages, serialization, sharing, shm
from jupyter_gpu._wire.pools import DEFAULT_IMAGE, pool_key
from jupyter_gpu.cost import footer
from jupyter_gpu.cost.limit import run_limit
from jupyter_gpu.errors import ConnectionLost, RemoteValueLost
from jupyter_gpu.notebook import cell_code, uses
from jupyter_gpu.notebook.cell_options import CellOptions, remote_limits
from jupyter_gpu.notebook.cell_outcome import CellOutcome
from jupyter_gpu.notebook import prefetch
from jupyter_gpu.notebook.names import cell_names, inputs_for
from jupyter_gpu.notebook.publish import Publisher
from jupyter_gpu.notebook.remote_values import Held, Lost, RemoteValue
from jupyter_gpu.notebook.sink import NotebookSink

_NOTHING = object()


@dataclass
class CellPlan:
    """What a cell needs before it is sent (plan_cell): where it runs, what it ships."""

    source: str
    opts: CellOptions
    gpu: str
    key: str  # the pool: images.pool_key(gpu, image)
    keep_warm: float | None
    names: list  # the names whose values it ships (or keeps, when the worker has them unchanged)
    free: frozenset  # the names it reads before (or without) binding them
    binds: frozenset
    use_shm: bool
    exec_count: int
    t0: float  # time.monotonic() when it was planned: its footer's wall time starts here
    base: str  # its id in the ledger, before the attempt's suffix
    fell_back: str | None = None  # the GPU spec asked for, when it runs on a fallback
    first: dict | None = None  # the `done` of an attempt its worker asked to be resent (with files)

    def needs(self, ns: dict, held) -> list:
        """The values only the worker holds that the cell reads: the backend must confirm it is
        still the same worker."""
        return sorted(n for n in self.free if n not in ns and n in held.remote_only)


@dataclass
class Packed:
    """One attempt's request (pack), and how it goes (send)."""

    held: Held  # what the worker it is meant for holds
    packer: serialization.Packer  # its buffers
    header: dict
    hashes: dict  # name -> content hash of each value it ships
    route: object = None  # the worker's open lane; None: through the backend
    size: int | None = None  # the bytes sent, once all of it is written
    moved: object = None  # files.Moved: the directory synced to a worker that cannot see it


@dataclass
class Sent:
    """A cell packed (and usually sent) as its request arrived, waiting for its magic to claim it."""

    plan: CellPlan
    values: dict  # name -> the object shipped (or kept on the worker)
    packed: Packed


def run_cell(session, cell_source: str, opts: CellOptions) -> dict:
    """A `%%gpu` cell, from its text to its footer (returned; the cell's error raised after it)."""
    if session.stop_first:  # as a local cell would have: the press came before it began
        session.stop_first = False
        raise KeyboardInterrupt
    sent = claim(session, cell_source, opts)
    plan = sent.plan if sent is not None else plan_cell(session, cell_source, opts)
    # at most: the lane (its worker may have retired), the backend, and a resend through it
    for attempt in range(3):
        packed = sent.packed if sent is not None and attempt == 0 else pack(session, plan, attempt)
        outcome = send_and_drain(session, plan, packed)
        if outcome is not None:
            return conclude(session, plan, packed, outcome)
    raise ConnectionLost("the backend asked repeatedly to resend the cell's inputs")


def claim(session, cell_source: str, opts: CellOptions) -> Sent | None:
    """The cell sent as its request arrived, if it is this one (same text, options and input
    objects); one that is not is settled."""
    sent, session.early = session.early, None
    if sent is None:
        return None
    ns, plan = session.shell.user_ns, sent.plan
    names = opts.inputs if opts.inputs is not None else inputs_for(
        cell_names(session.shell, cell_source, session.names_memo)[0], ns)
    if (cell_source == plan.source and opts.line == plan.opts.line and names == plan.names
            and all(ns.get(n, _NOTHING) is v for n, v in sent.values.items())):
        return sent
    settle(session, sent, "but what it reads changed before it ran here; it runs again")
    return None


def plan_cell(session, cell_source: str, opts: CellOptions, quiet: bool = False) -> CellPlan | None:
    """What a cell needs before it is sent: where it runs and which names it ships.  Raises
    what the cell must fail with; quiet (sending before the magic runs): None instead of saying
    anything or failing, and the magic decides later."""
    placed = placement(session, opts, quiet)
    if placed is None:
        return None
    gpu, fell_back, key = placed
    ns = session.shell.user_ns
    reads, binds = cell_names(session.shell, cell_source, session.names_memo)
    names = opts.inputs if opts.inputs is not None else inputs_for(reads, ns)
    free = reads - binds  # read before (or without) being bound here
    missing = [n for n in names if n not in ns]
    lost = session.lost.get(key, {})
    gone = [n for n in sorted(free) if n not in ns and n in lost
            and n not in session.held.get(key, Held()).remote_only]
    if quiet and (missing or gone):
        return None
    for n in missing:
        raise NameError(f"name '{n}' given to --in is not defined")
    for n in gone:
        raise RemoteValueLost(lost[n].explain(n))
    use_shm = shared_memory(session)
    keep_warm = opts.keep_warm if opts.keep_warm is not None else session.defaults.keep_warm
    return CellPlan(cell_source, opts, gpu, key, keep_warm, names, free, binds, use_shm,
                    session.cell_number(), time.monotonic(), session.new_cell_id(), fell_back)


def placement(session, opts: CellOptions, quiet: bool = False) -> tuple | None:
    """(GPU type, the spec asked for when that is a fallback, pool key) of a request with ``opts``
    (a cell's, a function call's); ``opts.image`` and ``opts.max_cost`` filled in.  quiet: None on
    a fallback instead of saying it (a cell sent before its magic runs: the magic decides later)."""
    gpu, fell_back = session.gpu_for(opts.gpu)  # connects first (the backend's offers decide)
    if quiet and fell_back:
        return None
    # what `jupyter-gpu run --max-cost` left, less what the kernel spent (a map's extra session,
    # functions/fanout.py: its kernel's session records every call)
    opts.max_cost = run_limit(opts.max_cost, gpu, getattr(session, "owner", session).spent_usd)
    if fell_back:  # said in the cell's output and recorded in its footer (`fallback_from`)
        session.say_fallback(fell_back, gpu)
    opts.image = opts.image or session.defaults.image or DEFAULT_IMAGE
    if opts.pip is not None or not isinstance(opts.image, str) or opts.image in session.shell.user_ns:
        environment(session, opts)  # a jupyter_gpu.Image (or --pip): its name, and its spec to send
    return gpu, fell_back, pool_key(gpu, opts.image)  # what the kernel holds is per (GPU type, image)


def environment(session, opts: CellOptions) -> None:
    """``opts.image`` a jupyter_gpu.Image (given, or a kernel variable's), plus ``--pip``: its name and spec."""
    from jupyter_gpu.notebook.image import Image, from_pip_line

    img = opts.image
    if isinstance(img, str):
        found = session.shell.user_ns.get(img)
        if isinstance(found, Image):
            img = found  # a variable of this kernel (it wins over a backend image of the same name)
        elif opts.pip is None:
            return
        elif img != DEFAULT_IMAGE:
            raise UsageError(f"--pip adds packages to the kernel's environment or to a jupyter_gpu.Image, "
                             f"not to the backend's image {img!r}")
    if opts.pip is not None:
        extra = from_pip_line(opts.pip)
        img = extra if not isinstance(img, Image) else img.pip_install(*extra.spec()["layers"][0]["packages"])
    if not isinstance(img, Image):
        raise UsageError(f"image must be a name or a jupyter_gpu.Image, not {type(img).__name__}")
    opts.image, opts.image_spec = img.name, img.spec()


def shared_memory(session) -> bool:
    """Whether a request's buffers may be lent as shared memory (its workers share this host);
    the kernel's segment pool made on first use."""
    use_shm = session.shares_host()
    if use_shm and session.pool is None:
        session.pool = shm.SegmentPool()  # closed by KernelSession.close at exit; a killed kernel's at the next sweep
    return use_shm


def pack(session, plan: CellPlan, attempt: int, more=None) -> Packed:
    """The request of one attempt at ``plan``, and the worker's lane it goes by (None: the backend);
    ``more(header, packer, held)`` adds to it (a function call) before the sync's files, the last buffers."""
    held = session.held.setdefault(plan.key, Held())
    packer = serialization.Packer(shm_pool=session.pool if plan.use_shm else None)
    ns, cwd = session.shell.user_ns, os.getcwd()
    again = plan.first is not None  # its worker asked for the kernel's directory
    session.files.by_value(plan.key, held, [ns[n] for n in plan.names if n in ns], cwd, again)  # (a synced worker's)
    inputs, keep, hashes, references = _pack_inputs(session, plan.names, held, packer)
    opts = plan.opts
    header = {
        "type": messages.EXECUTE,
        "cell": f"{plan.base}.{attempt}",
        "code": plan.source,  # as it is: numbered as the same text run as a local cell
        **cell_code.fields(session.shell, plan.source, plan.exec_count),  # its file name; the input history
        "gpu": plan.gpu,
        "image": opts.image,
        **({"image_spec": opts.image_spec} if opts.image_spec else {}),  # a jupyter_gpu.Image: built where it is not yet
        "exec_count": plan.exec_count,
        "inputs": inputs,
        "keep": keep,
        **({"references": references} if references else {}),  # held here as RemoteValues
        "expect_worker": held.worker if keep or plan.needs(session.shell.user_ns, held) else None,
        "binds": sorted(plan.binds),
        "out": opts.out,
        "no_out": opts.no_out,
        **remote_limits(opts.keep_remote),
        "shm": plan.use_shm,
        "keep_warm": plan.keep_warm,
        # the worker's segments whose values died here: it may reuse them
        "returned": session.reader.drain_returned(),
        "parent": session.parent(),  # the worker's get_ipython().kernel.get_parent()
        "cwd": cwd,  # the cell runs in the kernel's working directory (the worker's own view of it)
        "cwd_id": _dir_id(cwd),  # which directory that is: a worker with another one at its path says so
        **session.environ.fields(),  # the variables the notebook set, its own sys.path entries
        **uses.fields(session.shell, plan.source, plan.names, ns, opts.image_spec),  # the kernel's versions of what it uses
    }
    if more is not None:
        more(header, packer, held)
    route = session.lane(held)
    # a worker that cannot see the directory: its files (a large sync through the backend read as it is sent)
    sync, moved = session.files.request(plan.key, held, packer, cwd, again, stream=route is None)
    header.update(sync)
    return Packed(held, packer, header, hashes, route, moved=moved)


def _pack_inputs(session, names, held: Held, packer) -> tuple[dict, dict, dict, list]:
    """The cell's inputs: one the worker holds unchanged is kept (named in ``keep``), any other
    pickled into ``packer``.  Names that share objects with one another, or with what the worker
    holds, go as one group (``_wire/sharing.py``), with the held names they share with."""
    ns = session.shell.user_ns
    inputs, keep, hashes, references = {}, {}, {}, []
    values = {}
    for name in names:
        value = ns[name]
        if isinstance(value, RemoteValue):
            if value.ref is not None and held.worker == value.worker:
                values[name] = value  # a call's value on this worker: goes as its reference
                continue
            if held.worker == value.worker and held.values.get(name) == value.hash:
                keep[name] = value.hash
                references.append(name)
                continue
            raise RemoteValueLost(Lost(value.cell, value.worker, value.device, held.keep_warm).explain(name))
        values[name] = value
    share = _sharing(values, held, ns) if values else None
    if share is None:  # nothing here could share (the usual cell): each value on its own
        pickled = {name: serialization.pickle_value(name, value) for name, value in values.items()}
    else:
        pickled = _pack_groups(share, values, held, ns, packer, inputs, keep, hashes)
    for name, p in pickled.items():
        hashes[name] = p.hash
        if held.worker is not None and held.values.get(name) == p.hash:
            keep[name] = p.hash
        else:
            inputs[name] = packer.pack(p)
    return inputs, keep, hashes, references


def _pack_groups(share, values: dict, held: Held, ns: dict, packer, inputs: dict, keep: dict, hashes: dict) -> dict:
    """Pack (into ``inputs``, ``keep``, ``hashes``) the groups of names that share objects: the
    inputs, and the names the worker holds that they share with (``share``).  Returns the pickles
    of the inputs in no group, for the caller to pack."""
    pickled, todo = {}, list(values)
    while todo:  # the inputs, then what the worker holds that they share objects with
        name = todo.pop(0)
        try:
            p = pickled[name] = serialization.pickle_value(name, ns[name], watch=share.watch)
        except serialization.SerializationError:
            if name in values:
                raise
            continue  # a held name the cell does not read: it shares nothing that can be sent
        share.note(name, p)
        todo += [m for m in share.related(name, held.values) if m not in pickled and m not in todo]

    def holds(name: str, h: str) -> bool:
        return held.worker is not None and held.values.get(name) == h

    for group in share.groups(pickled) if share.links else ():
        members, refs = share.split(group, [n for n in group if not holds(n, pickled[n].hash)])
        try:
            joint, used = sharing.pickle_group(members, refs, share.values)
        except serialization.SerializationError:
            continue  # each input goes on its own, as it would alone
        kept = all(holds(n, joint[n].hash) for n in members)  # held there as this group
        for i, name in enumerate(members):
            hashes[name] = joint[name].hash
            if kept:
                keep[name] = joint[name].hash
            else:
                inputs[name] = {**packer.pack(joint[name]), "g": {"n": i, "r": used}}
        for name in refs:
            keep[name] = hashes[name] = pickled[name].hash
        for name in group:
            del pickled[name]
    return {name: p for name, p in pickled.items() if name in values}  # a held name in no group: not sent


def _sharing(values: dict, held: Held, ns: dict) -> "sharing.Sharing | None":
    """What finds the inputs that share objects, when one could (not a number, string or module)
    and something else could too: another input, or a value the worker holds."""
    found = {n: v for n, v in values.items() if sharing.shareable(v)}
    if not found:
        return None
    for name in held.values:
        if name not in found and name in ns:
            value = ns[name]
            if sharing.shareable(value) and not isinstance(value, RemoteValue):
                found[name] = value
    return sharing.Sharing(found) if len(found) > 1 else None


def send_and_drain(session, plan: CellPlan, packed: Packed) -> CellOutcome | None:
    """Send the cell (unless it went as its request arrived) and drain its events: its outcome,
    or None when it must be packed and sent again."""
    held, outcome = packed.held, None
    try:
        send(session, packed)
        prefetch.start(session.shell, plan.source)  # what the kernel binds after the cell, imported meanwhile
        outcome = drain(session, plan, packed)
    except lane.LaneClosed:  # only the lane raises it (the backend's connection: ConnectionLost)
        outcome = lane_lost(session, plan, packed)
        held.drop_lane()
        if outcome is None:  # it retired before reading the cell: ask the backend
            return None
    else:
        # the backend did not see a lane cell run: the kernel says where it ran (a `resend` ran nothing)
        if packed.route is not None and outcome is not None:
            keep_warm = plan.keep_warm if plan.keep_warm is not None else held.keep_warm
            messages.placed(outcome.done, worker=held.worker, gpu=plan.gpu, device=held.device, cold=False,
                            keep_warm=keep_warm, lane=held.lane, pool=held.pool, image=plan.opts.image)
            outcome.done["route"] = "lane"  # the footer's, not the wire's
    finally:
        if session.pool is not None and (outcome is None or not outcome.done.get("worker")):
            session.pool.reclaim(held.worker)  # nobody maps what this attempt lent
    if outcome is None:  # the worker holding our values is gone: send everything again
        session.forget(plan.key)
        for n in plan.needs(session.shell.user_ns, held):
            raise RemoteValueLost(session.lost[plan.key][n].explain(n))
    return outcome


def send(session, packed: Packed) -> None:
    """Write the request to its route (unless all of it went already)."""
    conn = packed.route or session.client
    if packed.route is not None:
        packed.header["session"] = session.id
    if packed.size is None:
        reader = packed.moved.reader if packed.moved is not None else None
        if reader is None:
            packed.size = conn.send(packed.header, packed.packer.buffers) + packed.packer.shm_bytes
        else:  # a large sync, read as it is sent
            packed.size = conn.send(packed.header, packed.packer.buffers, stream=reader) + packed.packer.shm_bytes


def drain(session, plan: CellPlan, packed: Packed) -> CellOutcome | None:
    """The cell's events into the notebook until its final one (None: send its inputs again)."""
    cell, opts = packed.header["cell"], plan.opts
    sink = NotebookSink(session, cell, plan.gpu, plan.t0, plan.key)
    outcome = driver.drive(sink, packed.route or session.client, cell, backend=session.client, gpu=plan.gpu,
                           image=opts.image, t0=plan.t0, timeout=opts.timeout, max_cost=opts.max_cost)
    if sink.first is not None and plan.first is None:
        plan.first = sink.first  # the worker took it cold, then asked for the kernel's directory
    return outcome


def lane_lost(session, plan: CellPlan, packed: Packed) -> CellOutcome | None:
    """The lane broke after the cell was sent.  None: the worker had retired without reading
    it (go through the backend); else the outcome of a cell that died with its worker."""
    held, cell = packed.held, packed.header["cell"]
    reply = session.request({"type": messages.LANE_LOST, "cell": cell, "gpu": plan.gpu, "worker": held.worker},
                            messages.LANE_LOST_REPLY)
    if not reply.get("ran"):
        return None
    out = CellOutcome()
    out.error({"ename": "WorkerLost", "evalue": reply["message"]}, [])
    out.done = messages.done(cell, reply["status"], worker=held.worker, gpu=plan.gpu,
                             device=reply.get("device", held.device), cold=False)
    return out


def conclude(session, plan: CellPlan, packed: Packed, outcome: CellOutcome, raise_error: bool = True) -> dict:
    """Record what the cell left where, and publish its footer (its last output); then raise the
    cell's error, if it failed and ``raise_error``."""
    done = outcome.done
    started_by(done, plan.first)
    session.remember(plan.key, packed.held, done, packed.hashes, outcome, plan.binds, plan.opts.no_out)
    moved = session.files.concluded(session.held.get(plan.key), packed.moved, done.get("files"), outcome.buffers,
                                    lambda text: Publisher(session.shell).stream("stderr", text))
    _follow_directory(done.get("cwd"))
    wall = time.monotonic() - plan.t0
    f = footer.build(done, wall, {"sent_bytes": packed.size, "received_bytes": outcome.received}, session.footers)
    if moved:
        f["files"] = moved  # synced in and out: {in, out, bytes}
    if plan.fell_back:
        f["fallback_from"] = plan.fell_back
    session.record(f)
    error = outcome.exception(done)
    if error is not None:  # a module the kernel has and the worker cannot see: where it is, what to do
        session.files.explain_missing(error, lambda text: Publisher(session.shell).stream("stderr", text))
    if error is None or not raise_error:
        outcome.show_after_error()
        Publisher(session.shell).footer(footer.bundle(f))
        return f
    pub = Publisher(session.shell)
    if outcome.clear_pending:  # as locally, the error is the output that a clear_output(wait=True) waited for
        outcome.clear_pending = False
        pub.clear_output(True)
    # what the worker showed after the error (its post_execute: the inline backend's figures) goes
    # after the error the kernel shows, as in a local cell; then the footer
    pub.footer_after_cell(footer.bundle(f), quiet_exit=isinstance(error, SystemExit), first=outcome.show_after_error)
    raise error


_last_dir: list = [None, None]  # the last cell's directory and its identity


def _dir_id(path: str) -> list | None:
    """The kernel's directory's identity [st_dev, st_ino] (None: it cannot be stat'd), stat'd only
    when it is not the last cell's: a warm cell in the same directory makes no system call.  Stale
    only for a directory replaced at its path between two cells in it, where the worker (which
    enters only a changed path) stays in the old one too."""
    if path != _last_dir[0]:
        try:
            st = os.stat(path)
            _last_dir[:] = [path, [st.st_dev, st.st_ino]]
        except OSError:
            _last_dir[:] = [path, None]
    return _last_dir[1]


def started_by(done: dict, first: dict | None) -> None:
    """A cell its worker asked to be resent (with the kernel's directory) started with that first
    attempt: a cold start (and its queue) then is this cell's, in its footer and its cost."""
    if not first or not first.get("cold") or done.get("cold") or first.get("worker") != done.get("worker"):
        return
    t, t0 = done.setdefault("timings", {}), first.get("timings") or {}
    for phase in ("queue", "cold_start", "worker_start"):
        t[phase] = t.get(phase, 0.0) + t0.get(phase, 0.0)
    done["cold"] = True
    if first.get("start_method"):
        done["start_method"] = first["start_method"]


def _follow_directory(cwd: str | None) -> None:
    """The cell changed directory on the worker (same filesystem): the kernel goes there too, as
    after a local cell, so later cells, local or `%%gpu`, start from it."""
    if cwd and cwd != os.getcwd() and os.path.isdir(cwd):
        os.chdir(cwd)


def settle(session, sent: Sent, why: str = "when the kernel stopped before running it") -> None:
    """A cell sent as its request arrived that its magic did not claim: interrupt it, and still
    show what it printed and what it cost (its footer)."""
    packed = sent.packed
    held, route = packed.held, packed.route
    if packed.size is None and (route is None or not route.closed):  # packed, never sent
        if session.pool is not None:
            session.pool.reclaim(held.worker)
        return
    pub = Publisher(session.shell)
    pub.stream("stderr", f"jupyter-gpu: this cell had already been sent to worker {held.worker} {why}; "
                         "it is interrupted there\n")
    try:
        (route or session.client).send({"type": messages.INTERRUPT, "cell": packed.header["cell"]})
    except Exception:  # the lane is gone: asking the backend tells what became of the cell
        pass
    try:
        outcome = send_and_drain(session, sent.plan, packed)
        if outcome is not None:
            conclude(session, sent.plan, packed, outcome, raise_error=False)
    except Exception as e:  # the kernel's own error is the cell's; this one is only told
        pub.stream("stderr", f"jupyter-gpu: the cell sent to worker {held.worker} ended badly: {e}\n")
