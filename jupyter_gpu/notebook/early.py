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
It is planned, packed and sent by the steps the magic's own run takes (cell.py).  The magic claims
the sent cell only if its text, line and input objects are those sent (cell.claim).  A cell sent
but not claimed (the stop button pressed before the magic ran) is interrupted, and its output and
footer still go out: it ran, and what it cost is shown (cell.settle).
"""
from __future__ import annotations

import inspect
import threading

from jupyter_gpu._wire import lane, serialization
from jupyter_gpu.notebook import cell

# inputs larger than this are packed on arrival but sent by the magic, which handles a stop press
# while a large send goes on; the ~0.4 ms gained matters for short cells only
SMALL = 1 << 20
_OURS = "_jupyter_gpu_early"  # marks the handler we installed (a reloaded extension reuses it)
_SPLIT: dict = {}  # cell text -> (the cleanup transforms applied, plain_cell's answer)


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
    split = plain_cell(code, shell)
    if split is None:
        return
    line, body = split
    try:
        opts = magics.cell_options(line)
    except Exception:  # a bad option: the magic says so
        return
    plan = cell.plan_cell(session, body, opts, quiet=True) if opts is not None else None
    held = session.held.get(plan.key) if plan is not None else None
    if held is None or held.worker is None:  # a cold cell gains nothing worth a millisecond
        return
    if store_history:
        plan.exec_count += 1  # the magic sees this cell in the input history; it is not there yet
    ns = shell.user_ns
    if any((serialization.size_hint(ns[n]) or 0) > SMALL for n in plan.names):
        return
    try:
        packed = cell.pack(session, plan, 0)  # for the worker's lane; without one the backend relays it
    except Exception:  # unpicklable, a value lost with its worker: the magic says so
        if session.pool is not None:
            session.pool.reclaim(held.worker)  # what the inputs packed before it had lent
        return
    session.early = cell.Sent(plan, {n: ns[n] for n in plan.names}, packed)
    reader = packed.moved.reader if packed.moved is not None else None  # (a large sync: read as it is sent)
    if sum(memoryview(b).nbytes for b in packed.packer.buffers) + (sum(reader.sizes) if reader else 0) > SMALL:
        return  # packed once; the magic sends it
    try:
        cell.send(session, packed)
    except lane.LaneClosed:  # the magic finds the lane closed and asks the backend what became of it
        return
    except Exception:  # the backend's connection: the magic tries again, and says why it cannot
        session.early = None
        if session.pool is not None:
            session.pool.reclaim(held.worker)
        return
    except KeyboardInterrupt:  # maybe cut mid-message: that connection is done with
        (packed.route or session.client).close()
        raise
    session.sent_on_arrival += 1


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
                cell.settle(ours.session, sent)

    setattr(execute_request, _OURS, magics)
    handlers["execute_request"] = execute_request
    return True
