"""Comms and kernel messages of code that runs on a worker, in the notebook as a local kernel's.

Code on the worker (ipywidgets, tqdm.notebook, a library calling ``kernel.session.send``) sends
iopub messages through the worker's stand-in kernel (worker_image/jupyter_gpu_worker/kernel.py);
each arrives here as an ``iopub`` event of the running request and is published on this kernel's
iopub under the request's parent (``publish``).  A ``comm_open`` also registers a RemoteComm in
this kernel's comm manager, so what the frontend sends to that comm (a slider moved, a button
pressed, the comm closed) goes to the worker that holds it, as a request of its own (``forward``):
the kernel's shell handler runs it to its end, as a local kernel runs a comm handler, publishing
what the handler shows under the frontend's message.  The names the handler binds on the worker
come back as a cell's do.  When that worker is gone, its comms are closed in the frontend with a
message saying so (``worker_gone``).
"""
from __future__ import annotations

import time

from jupyter_gpu._wire import messages
from jupyter_gpu.notebook.publish import Publisher



class RemoteComm:
    """Stands in this kernel's comm manager for a comm that lives on a worker."""

    primary = True

    def __init__(self, session, comm_id: str, target_name: str, key: str, worker: str | None):
        self.session, self.comm_id, self.target_name = session, comm_id, target_name
        self.key, self.worker = key, worker
        self._closed = False
        self.topic = f"comm-{comm_id}".encode("ascii", "replace")

    def handle_msg(self, msg: dict) -> None:
        forward(self, "comm_msg", msg)

    def handle_close(self, msg: dict) -> None:
        self._closed = True
        forward(self, "comm_close", msg)

    def close(self, data=None, metadata=None, buffers=None, deleting: bool = False) -> None:
        """Closed from this kernel's side (the frontend's view goes; the worker is told)."""
        if self._closed:
            return
        self._closed = True
        _unregister(self)
        Publisher(self.session.shell).raw("comm_close", {"comm_id": self.comm_id, "data": data or {}}, self.topic)

    def on_msg(self, callback) -> None:  # code in this kernel cannot listen to a remote comm
        pass

    on_close = on_msg


def _manager(shell):
    kernel = getattr(shell, "kernel", None)
    return getattr(kernel, "comm_manager", None)


def _unregister(remote: RemoteComm) -> None:
    remote.session.comms.pop(remote.comm_id, None)
    manager = _manager(remote.session.shell)
    if manager is not None and manager.comms.get(remote.comm_id) is remote:
        del manager.comms[remote.comm_id]


def publish(sink, h: dict, buffers: list, key: str) -> None:
    """An ``iopub`` event of a request from ``sink``'s cell: publish it; a comm opened or closed
    there is registered or dropped here."""
    msg_type, content = h.get("msg_type"), dict(h.get("content") or {})
    if msg_type not in messages.IOPUB_TYPES:
        sink.stream("stderr", f"[jupyter-gpu: a {msg_type!r} message from the worker was not published: "
                              "only a cell's outputs and comm messages are]\n")
        return
    if msg_type == "stream":
        sink.stream(content.get("name", "stdout"), str(content.get("text", "")))
        return
    if msg_type in ("display_data", "execute_result", "error"):
        sink._cleared()  # an output: a clear_output(wait=True) held for the next one goes first
    if msg_type in ("display_data", "update_display_data") and content.get("transient"):
        content["transient"] = sink.local_transient(content["transient"])
    session = sink.session
    comm_id = content.get("comm_id")
    if msg_type == "comm_msg":
        state = (content.get("data") or {}).get("state") or {}
        if "msg_id" in state:  # an Output widget starts (or stops) capturing what the cell shows
            sink.capturing = bool(state["msg_id"])
    if msg_type == "comm_open" and isinstance(comm_id, str):
        manager = _manager(session.shell)
        remote = RemoteComm(session, comm_id, str(content.get("target_name", "")), key, None)
        session.comms[comm_id] = remote
        if manager is not None:
            manager.register_comm(remote)
    elif msg_type == "comm_close" and isinstance(comm_id, str):
        remote = session.comms.get(comm_id)
        if remote is not None:
            remote._closed = True
            _unregister(remote)
    ident = f"comm-{comm_id}".encode("ascii", "replace") if comm_id else msg_type.encode()
    sink.raw(msg_type, content, ident, h.get("metadata") or {}, buffers)


def placed(session, key: str, worker: str) -> None:
    """A request of pool ``key`` ended on ``worker``: the comms it opened live there."""
    for remote in session.comms.values():
        if remote.worker is None and remote.key == key:
            remote.worker = worker


def forward(remote: RemoteComm, msg_type: str, msg: dict) -> None:
    """The frontend's ``msg`` to ``remote``: run on its worker, its outputs published here under
    ``msg`` (this kernel's parent now), the names its handler bound brought back."""
    from jupyter_gpu.notebook import cell
    from jupyter_gpu.notebook.cell_options import CellOptions

    session = remote.session
    held = session.held.get(remote.key)
    if held is None or held.worker is None or held.worker != remote.worker:
        worker_gone(session, remote.key, remote.worker)
        return
    gpu, _, image = remote.key.partition("@")
    plan = cell.CellPlan("", CellOptions(image=image or None), gpu, remote.key, None, [], frozenset(), frozenset(),
                         session.shares_host(), session.cell_number(), time.monotonic(), session.new_cell_id())
    packed = cell.pack(session, plan, 0)  # a cell's request, with no code and no inputs
    packed.header["expect_worker"] = held.worker  # the comm lives there: no other worker may take it
    packed.header["comm"] = {"msg_type": msg_type, "header": session.jsonable_header(msg.get("header") or {}),
                             "content": msg.get("content") or {}, "metadata": msg.get("metadata") or {}}
    packed.packer.buffers = [bytes(memoryview(b)) for b in msg.get("buffers") or ()]
    try:
        outcome = cell.send_and_drain(session, plan, packed)
    except Exception as e:  # the worker or the backend is gone: the widget cannot answer any more
        worker_gone(session, remote.key, remote.worker, str(e))
        return
    if outcome is None:  # the worker that held the comm is gone
        worker_gone(session, remote.key, remote.worker)
        return
    session.remember(plan.key, packed.held, outcome.done, {}, outcome, (), False)
    error = outcome.exception(outcome.done)
    if error is not None:  # our own failure (the handler's are shown by the worker, as locally)
        Publisher(session.shell).stream("stderr", f"jupyter-gpu: the widget's message failed on its worker: {error}\n")


def worker_gone(session, key: str, worker: str | None, why: str = "") -> None:
    """Worker ``worker`` of pool ``key`` is gone: close its comms in the frontend, saying so once."""
    gone = [r for r in list(session.comms.values()) if r.key == key and r.worker == worker]
    if not gone:
        return
    for remote in gone:
        remote.close()
    because = f": {why}" if why else " (its keep-warm window ran out, it was released, or it crashed)"
    Publisher(session.shell).stream(
        "stderr", f"jupyter-gpu: {len(gone)} widget comm(s) of worker {worker or '?'} were closed: the worker is "
                  f"gone{because}. Run their cell again to get them back.\n")
