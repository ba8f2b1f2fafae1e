"""A warm cell sent to its worker as its execute_request arrives, before IPython runs it.

Between ipykernel receiving a cell and IPython calling its magic, the kernel spends most of a
millisecond of this 2-core VM's time on its own bookkeeping (status and input published, history,
compiling; the text transforms are remembered, cell_text.py).  A `%%gpu` cell whose worker is
warm is sent at the start of that time (by the worker's lane, or to the backend, which relays it),
so the worker runs it meanwhile; the magic then claims it and relays its events, which are already
waiting or on their way.

Sending early must not change what the cell does, so it is done only when nothing that runs
between could change the cell's text or its inputs:
- the cell is plain: `%%gpu` on its first line, a line without `$` or `{` (IPython expands those),
  and IPython's cleanup transforms leave the cell as it is;
- the only pre-execute hooks are IPython's own (no autoreload, no user hook), and there are no
  AST transformers nor post-input transformers;
- a normal execute_request (not silent) on the kernel's main thread (not a subshell);
- its worker is warm, its inputs pack (else the magic runs and says why) and are small (over 1 MiB
  they are packed now and sent by the magic, which handles a stop press during a long send).
The magic claims the sent cell only if its text, line and input objects are those sent.  A cell
sent but not claimed (the stop button pressed before the magic ran) is interrupted, and its output
and footer still go out: it ran, and what it cost is shown.
"""
from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass

from jupyter_gpu._wire import lane, messages, serialization
from jupyter_gpu.notebook.names import inputs_for
from jupyter_gpu.notebook.publish import Publisher
from jupyter_gpu.notebook.options import CellOptions, CellPlan

_NOTHING = object()
# inputs larger than this are packed on arrival but sent by the magic, which handles a stop press
# while a large send goes on; the ~0.4 ms gained matters for short cells only
SMALL = 1 << 20
_OURS = "_jupyter_gpu_early"  # marks the handler we installed (a reloaded extension reuses it)
_SPLIT: dict = {}  # cell text -> (the cleanup transforms applied, plain_cell's answer)


@dataclass
class Sent:
    """A cell packed (and usually sent) as its request arrived, waiting for its magic to claim it."""

    plan: CellPlan
    values: dict  # name -> the object shipped (or kept on the worker)
    attempt: tuple  # what KernelSession._attempt needs: (held, packer, header, hashes, route, bytes)
    # (bytes is None until the request is all written: the magic sends it, or a stop cut it short)


def plain_cell(code: str, shell) -> tuple[str, str] | None:
    """(line, body) as IPython will hand them to the `%%gpu` magic, or None where anything
    between the request and the magic could change the cell or what it reads."""
    first, newline, rest = code.partition("\n")
    if not first.startswith("%%gpu") or not newline or not rest.strip():
        return None
    line = first[len("%%gpu"):]
    if (line and line[0] != " ") or "$" in line or "{" in line:
        return None
    if shell.input_transformers_post or shell.ast_transformers:
        return None
    for event in ("pre_execute", "pre_run_cell"):
        if any(not getattr(hook, "__module__", "").startswith("IPython.core.")
               for hook in shell.events.callbacks.get(event, ())):
            return None
    # the cleanup transforms are pure functions of the text: a cell run again is not split and
    # transformed again (~0.03 ms of the kernel's time before the cell is sent)
    transforms = shell.input_transformer_manager.cleanup_transforms
    known = _SPLIT.get(code)
    if known is not None and known[0] == transforms:
        return known[1]
    lines = (code if code.endswith("\n") else code + "\n").splitlines(keepends=True)
    cleaned = lines
    for transform in transforms:
        cleaned = transform(cleaned)
    found = (line.strip(), "".join(lines[1:])) if cleaned == lines else None
    if len(_SPLIT) >= 256:
        _SPLIT.clear()
    _SPLIT[code] = (list(transforms), found)
    return found


def send(magics, code: str, store_history: bool) -> None:
    """Send ``code`` now if it is a plain `%%gpu` cell for a warm worker: by the worker's lane, or
    to the backend that relays it."""
    session, shell = magics.session, magics.shell
    if session.early is not None or shell.magics_manager.magics["cell"].get("gpu") != magics.gpu_cell:
        return
    cell = plain_cell(code, shell)
    if cell is None:
        return
    line, body = cell
    try:
        opts = magics.cell_options(line)
    except Exception:  # a bad option: the magic says so
        return
    plan = session.plan(body, opts, quiet=True) if opts is not None else None
    held = session.held.get(plan.key) if plan is not None else None
    if held is None or held.worker is None:  # a cold cell gains nothing worth a millisecond
        return
    if store_history:
        plan.exec_count += 1  # the magic sees this cell in the input history; it is not there yet
    ns = shell.user_ns
    if any((serialization.size_hint(ns[n]) or 0) > SMALL for n in plan.names):
        return
    route = session._lane(held)  # None: the backend relays it
    try:
        held, packer, header, hashes = session.pack(plan, 0)
    except Exception:  # unpicklable, a value lost with its worker: the magic says so
        if session.pool is not None:
            session.pool.reclaim(held.worker)  # what the inputs packed before it had lent
        return
    session.early = sent = Sent(plan, {n: ns[n] for n in plan.names}, (held, packer, header, hashes, route, None))
    if sum(memoryview(b).nbytes for b in packer.buffers) > SMALL:
        return  # packed once; the magic sends it
    if route is not None:
        header["session"] = session.id
    conn = route or session.client
    try:
        size = conn.send(header, packer.buffers) + packer.shm_bytes
    except lane.LaneClosed:  # the magic finds the lane closed and asks the backend what became of it
        return
    except Exception:  # the backend's connection: the magic tries again, and says why it cannot
        session.early = None
        if session.pool is not None:
            session.pool.reclaim(held.worker)
        return
    except KeyboardInterrupt:  # maybe cut mid-message: that connection is done with
        conn.close()
        raise
    sent.attempt = (*sent.attempt[:5], size)
    session.sent_on_arrival += 1


def claim(session, cell_source: str, opts: CellOptions) -> Sent | None:
    """The cell sent early, if it is this one (same text, options and input objects)."""
    sent, session.early = session.early, None
    if sent is None:
        return None
    ns, plan = session.shell.user_ns, sent.plan
    names = opts.inputs if opts.inputs is not None else inputs_for(session._names_of(cell_source)[0], ns)
    if (cell_source == plan.source and opts.line == plan.opts.line and names == plan.names
            and all(ns.get(n, _NOTHING) is v for n, v in sent.values.items())):
        return sent
    settle(session, sent, "but what it reads changed before it ran here; it runs again")
    return None


def settle(session, sent: Sent, why: str = "when the kernel stopped before running it") -> None:
    """A cell sent early that its magic did not claim: interrupt it, and still show what it
    printed and what it cost (its footer)."""
    held, _, header, _, route, size = sent.attempt
    if size is None and (route is None or not route.closed):  # packed, never sent
        if session.pool is not None:
            session.pool.reclaim(held.worker)
        return
    pub = Publisher(session.shell)
    pub.stream("stderr", f"jupyter-gpu: this cell had already been sent to worker {held.worker} {why}; "
                         "it is interrupted there\n")
    try:
        (route or session.client).send({"type": messages.INTERRUPT, "cell": header["cell"]})
    except Exception:  # the lane is gone: asking the backend tells what became of the cell
        pass
    try:
        tried = session._attempt(sent.plan, 0, sent)
        if tried is not None:
            session.conclude(sent.plan, *tried, raise_error=False)
    except Exception as e:  # the kernel's own error is the cell's; this one is only told
        pub.stream("stderr", f"jupyter-gpu: the cell sent to worker {held.worker} ended badly: {e}\n")


def install(magics) -> bool:
    """Wrap the kernel's execute_request handler so a plain warm `%%gpu` cell is sent as it
    arrives.  False (nothing done) outside an ipykernel whose handlers are coroutines."""
    kernel = getattr(magics.shell, "kernel", None)
    handlers = getattr(kernel, "shell_handlers", None)
    if not isinstance(handlers, dict) or "execute_request" not in handlers:
        return False
    current = handlers["execute_request"]
    if getattr(current, _OURS, None) is not None:
        setattr(current, _OURS, magics)  # the extension loaded again: the new magics send
        return True
    if not inspect.iscoroutinefunction(current):
        return False

    async def execute_request(stream, ident, parent):
        ours = getattr(execute_request, _OURS)
        content = parent.get("content", {})
        if (not content.get("silent") and parent["header"].get("subshell_id") is None
                and threading.current_thread() is threading.main_thread()):
            try:
                send(ours, content.get("code", ""), content.get("store_history", True))
            except Exception:  # never in the way of the cell: the magic sends it instead
                ours.session.early = None
            except KeyboardInterrupt:  # the stop button, before the cell began: its magic stops it
                ours.session.stop_first = True
        try:
            await current(stream, ident, parent)
        finally:
            ours.session.stop_first = False
            sent, ours.session.early = ours.session.early, None
            if sent is not None:  # the magic never ran (stopped, or failed before it)
                settle(ours.session, sent)

    setattr(execute_request, _OURS, magics)
    handlers["execute_request"] = execute_request
    return True
