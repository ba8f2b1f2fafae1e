"""Spawned calls: ``f.spawn(x)`` / ``f.spawn_map(xs)`` -> a ``FunctionCall`` the backend runs and
keeps (jupyter_gpu_backend/scheduling/jobs.py), whether or not this kernel lives to see it end.

- A spawn sends the call whole (the function by value, its arguments; no shared memory, no lane,
  nothing the worker is assumed to hold) and returns once the backend has taken it: its id
  (``object_id``, ``fc-...``) is the backend's, and is shown as the spawning cell's output (the
  saved notebook keeps it; ``application/vnd.jupyter-gpu.call+json``).
- ``get(timeout=)`` streams the call's output into the cell that asks (all of it, once, whenever
  it asks), then returns its value or raises its exception (the user's own type, with the worker's
  traceback), ``CallTimeout`` (a ``TimeoutError``: it runs on), ``CallCancelled`` or ``CallLost``.
  The stop button stops the wait, not the call.  The first ``get`` in a kernel records the call's
  cost (``%gpu cost``, the cell's footer of calls).
- ``cancel()`` returns once the call has stopped; ``FunctionCall.from_id(id)`` works from any kernel
  of the same user, after a kernel or backend restart, for as long as the backend keeps the result
  ($JUPYTER_GPU_JOB_TTL); ``jupyter_gpu.calls()`` lists this notebook's.
"""
from __future__ import annotations

import html
import os
import time

from jupyter_gpu._client import driver
from jupyter_gpu._wire import messages, serialization
from jupyter_gpu.cost import footer
from jupyter_gpu.errors import CallCancelled, CallLost, ConnectionLost
from jupyter_gpu.functions import call, handshake
from jupyter_gpu.notebook import cell
from jupyter_gpu.notebook.publish import Publisher
from jupyter_gpu.notebook.sink import NotebookSink

MIME = "application/vnd.jupyter-gpu.call+json"
ASK_TIMEOUT = 30.0  # seconds a spawn, cancel or lookup waits for the backend's answer


class FunctionCall:
    """A spawned call, by its id: ``get``, ``cancel``, ``from_id``, ``gather``."""

    def __init__(self, object_id: str, info: dict | None = None):
        self.object_id = object_id
        self._info = dict(info or {})
        self._shown = (None, 0)  # (the cell that asked last, how many of the call's outputs it showed)

    def __repr__(self) -> str:
        i = self._info
        return f"<FunctionCall {self.object_id} {i.get('function') or '?'} {i.get('state') or '?'}>"

    @property
    def state(self) -> str | None:
        """queued, running, done, failed, cancelled, lost or expired, as last heard (``info()`` asks)."""
        return self._info.get("state")

    def info(self) -> dict:
        """What the backend knows of the call now: state, function, notebook, gpu, created,
        finished, expires (unix times), cause."""
        self._info = _ask({"type": messages.JOB_INFO, "job": self.object_id})
        return {k: v for k, v in self._info.items() if k not in ("type", "seq", "cell")}

    @classmethod
    def from_id(cls, object_id: str) -> "FunctionCall":
        """The call with this id (``NoSuchCall`` when none of yours has it)."""
        fc = cls(object_id)
        fc.info()
        return fc

    @staticmethod
    def gather(*calls: "FunctionCall") -> list:
        """Each call's value, in order (the first that raised raises)."""
        return [c.get() for c in calls]

    def cancel(self) -> None:
        """Stop the call: it never starts, or it is interrupted (killed if it does not stop)."""
        self._info = _ask({"type": messages.JOB_CANCEL, "job": self.object_id}, ASK_TIMEOUT * 2)

    def get(self, timeout: float | None = None):
        """The call's value, once it has finished (its output shown here as it comes)."""
        return _reconnecting(lambda: self._get(timeout))

    def _get(self, timeout: float | None):
        session = call._session()
        client = session.connect()
        cid = f"{session.new_cell_id()}.0"
        t0 = time.monotonic()
        here = (session.parent().get("header") or {}).get("msg_id")  # the asking cell
        after = self._shown[1] if self._shown[0] == here else 0  # what an earlier get in it showed
        client.send({"type": messages.JOB_GET, "cell": cid, "job": self.object_id, "timeout": timeout,
                     "after": after})
        gpu = self._info.get("gpu") or ""
        sink = _Counting(session, cid, gpu, t0, "")
        sink.seen = after
        try:
            outcome = driver.drive(sink, client, cid, backend=client, gpu=gpu, image=None, t0=t0)
        finally:
            self._shown = (here, sink.seen)
        done = outcome.done
        if done.get("timings", {}).get("run") is not None and self.object_id not in _billed(session):
            _billed(session).add(self.object_id)
            t = done["timings"]
            wall = sum(t.get(k, 0.0) for k in ("queue", "cold_start", "run"))
            f = footer.build(done, wall, {"sent_bytes": 0, "received_bytes": outcome.received}, [])
            session.record(f)
            call.calls_footer.add(session, f)
        status = done.get("status")
        if status in ("interrupted", "killed", "lost"):
            info = self.info()
            if info.get("state") == "cancelled":
                raise CallCancelled(f"spawned call {self.object_id} was cancelled")
            if info.get("state") == "lost":
                raise CallLost(f"spawned call {self.object_id} was lost: {info.get('cause')}")
        value, error = call.value_of(session, done, outcome, gpu)
        if error is not None:
            raise error
        if self._info.get("map"):  # (a spawn's reply, from_id's and calls()'s all say)
            return _items(self, value)
        return value


class _Counting(NotebookSink):
    """The notebook's sink, counting the outputs it shows (one per event the backend keeps)."""

    seen = 0

    def stream(self, name, text):
        self.seen += 1
        super().stream(name, text)

    def output(self, header, buffers):
        self.seen += 1
        super().output(header, buffers)

    def clear_output(self, wait):
        self.seen += 1
        super().clear_output(wait)

    def error(self, header, buffers):
        self.seen += 1
        super().error(header, buffers)

    def iopub(self, header, buffers):
        self.seen += 1
        super().iopub(header, buffers)

    def page(self, data, start):
        self.seen += 1
        super().page(data, start)


def _items(fc: FunctionCall, results: list) -> list:
    out = []
    for index, (ok, value) in enumerate(results):
        if not ok and not fc._info.get("return_exceptions"):
            raise call.ItemFailed(f"item {index} of {fc.object_id} raised {type(value).__name__}: {value}") from value
        out.append(value)
    return out


def spawn(f, args: tuple, kwargs: dict) -> FunctionCall:
    return _spawn(f, {"args": serialization.pickle_value("<arguments>", (args, kwargs))}, {})


def spawn_map(f, items, kwargs: dict, return_exceptions: bool) -> FunctionCall:
    """One call over all the items, on one worker: one handle, its value the list of results."""
    packed = serialization.pickle_value("<map items>", [(tuple(a), kwargs) for a in items])
    return _spawn(f, {"items": packed, "return_exceptions": True},
                  {"map": True, "return_exceptions": return_exceptions})


def _spawn(f, what: dict, job: dict) -> FunctionCall:
    session = call._session()
    plan = call._plan(session, f)
    fn, setup = call._pickles(f)
    packer = serialization.Packer()  # no shared memory: the call outlives this kernel
    spec = {"name": getattr(f.fn, "__qualname__", "?"), "fn": packer.pack(fn), "env": handshake.environment(f.fn),
            "job": True}
    source = call._source(session.shell, f.fn)
    if source:
        spec["source"] = source
    if setup is not None:
        spec["setup"] = packer.pack(setup)
    for key, value in what.items():
        spec[key] = packer.pack(value) if isinstance(value, serialization.Pickled) else value
    cwd = os.getcwd()
    header = {
        "type": messages.EXECUTE, "cell": f"{plan.base}.0", "code": "", "gpu": plan.gpu, "image": plan.opts.image,
        **({"image_spec": plan.opts.image_spec} if plan.opts.image_spec else {}),
        "exec_count": plan.exec_count, "inputs": {}, "keep": {}, "binds": [], "no_out": True, "shm": False,
        "keep_warm": plan.keep_warm, "cwd": cwd, "cwd_id": cell._dir_id(cwd), **session.environ.fields(),
        "call": spec, "job": {"notebook": notebook(session), **job},
    }
    reply = session.request(header, messages.JOB_REPLY, ASK_TIMEOUT, packer.buffers)
    fc = FunctionCall(reply["job"], reply)
    name = spec["name"]
    text = f"spawned {name} -> FunctionCall {fc.object_id}"
    Publisher(session.shell).display(
        {MIME: {"id": fc.object_id, "function": name, "created": reply.get("created")}, "text/plain": text,
         "text/html": f'<div class="jupyter-gpu-call {footer.NO_MATH}" style="font:12px monospace;color:#555">'
                      f'{html.escape(text)}</div>'},
        {})
    return fc


def calls() -> "CallList":
    """This notebook's spawned calls on the backend, newest first (any kernel of it, since a restart too)."""
    session = call._session()
    reply = _ask({"type": messages.JOB_LIST, "notebook": notebook(session)}, reply_type=messages.JOBS_REPLY)
    return CallList(FunctionCall(j["job"], j) for j in reply.get("jobs", []))


class CallList(list):
    """A list of FunctionCalls that shows as a table."""

    def _rows(self):
        for c in self:
            i = c._info
            yield (c.object_id, i.get("function") or "", i.get("state") or "", _when(i.get("created")),
                   _when(i.get("finished")))

    def __repr__(self) -> str:
        lines = [f"{len(self)} spawned call(s)"]
        lines += ["  ".join(row) for row in self._rows()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{h}</th>" for h in ("id", "function", "state", "created", "finished"))
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in self._rows())
        return f'<table class="jupyter-gpu-calls {footer.NO_MATH}"><tr>{head}</tr>{body}</table>'


def notebook(session) -> str:
    """Whose calls these are: the notebook's path as Jupyter names its kernel's session, else the
    kernel's directory (a headless kernel: its notebook's folder)."""
    return (os.environ.get("JPY_SESSION_NAME") or session.shell.user_ns.get("__session__")
            or os.path.join(os.getcwd(), ""))


def _when(t) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""


def _billed(session) -> set:
    if not hasattr(session, "jobs_billed"):
        session.jobs_billed = set()
    return session.jobs_billed


def _ask(header: dict, timeout: float = ASK_TIMEOUT, reply_type: str = messages.JOB_REPLY) -> dict:
    return _reconnecting(lambda: call._session().request(header, reply_type, timeout))


def _reconnecting(ask):
    """``ask()``, and once more on a fresh connection if the backend's closed under it: a backend
    that died (while a call ran) is followed by the next one, which says what became of the call."""
    try:
        return ask()
    except ConnectionLost:
        session = call._session()
        if session.client is not None:
            session.client.close()
        return ask()
