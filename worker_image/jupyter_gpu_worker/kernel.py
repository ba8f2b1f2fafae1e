"""The kernel's parts that notebook code reaches for, on the worker: ``get_ipython().kernel``.

In a local kernel, ipywidgets, tqdm.notebook and some plotting libraries talk to the notebook
through the kernel: comms (``comm.create_comm``), ``kernel.session.send(kernel.iopub_socket, ...)``
with ``kernel.get_parent()``.  Here each of those messages becomes an ``iopub`` event of the
running request, which the kernel publishes on its own iopub under the request's parent
(notebook/comms.py), so the frontend sees what a local kernel would have sent.  Messages from the
frontend to a comm that lives here come as requests (``Execute.comm``) and run on the main thread
between cells, as a local kernel runs them between cells (``WorkerKernel.handle_comm``).
"""
from __future__ import annotations

import datetime
import sys
import uuid

try:
    import comm as comm_package
    from comm.base_comm import BaseComm, CommManager
except ImportError:  # an image without the comm package has no widgets either: the kernel object only
    comm_package = None
    BaseComm = object

    class CommManager:  # noqa: D101 - what handle_comm needs of one
        comms: dict = {}

        def __getattr__(self, name):
            return lambda *args: None

from jupyter_gpu._wire import messages
from jupyter_gpu_worker.events import Emitter, jsonable



class _Socket:
    """Stands for one of the kernel's sockets (``kernel.iopub_socket``): messages sent to it
    become events; the kernel sends them on the real one."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<the kernel's {self.name} socket, through jupyter-gpu>"


class WorkerSession:
    """``kernel.session``: builds messages (``msg``) and sends them (``send``), as jupyter_client's."""

    def __init__(self, kernel: "WorkerKernel"):
        self._kernel = kernel
        self.session = uuid.uuid4().hex
        self.username = "jupyter-gpu"

    def msg_header(self, msg_type: str) -> dict:
        return {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "username": self.username,
                "session": self.session, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "version": "5.3"}

    def msg(self, msg_type: str, content=None, parent=None, header=None, metadata=None) -> dict:
        header = header or self.msg_header(msg_type)
        return {"header": header, "msg_id": header["msg_id"], "msg_type": msg_type,
                "parent_header": (parent or {}).get("header", parent or {}), "content": content or {},
                "metadata": metadata or {}}

    def send(self, stream, msg_or_type, content=None, parent=None, ident=None, buffers=None, track=False,
             header=None, metadata=None):
        if isinstance(msg_or_type, dict):
            msg = msg_or_type
            msg_type = msg.get("msg_type") or msg["header"]["msg_type"]
            content, metadata = msg.get("content", {}), msg.get("metadata", {})
        else:
            msg_type = msg_or_type
            msg = self.msg(msg_type, content, parent, header, metadata)
        if stream is self._kernel.iopub_socket:
            self._kernel.publish(msg_type, content or {}, metadata or {}, buffers)
        return msg


class WorkerKernel:
    """``get_ipython().kernel`` on a worker."""

    implementation = "jupyter-gpu-worker"

    def __init__(self, shell, emitter: Emitter):
        self.shell = shell
        self.emitter = emitter
        self.iopub_socket = _Socket("iopub")
        self.session = WorkerSession(self)
        self.comm_manager = CommManager()
        self._parent: dict = {}

    # -- the request being served ------------------------------------------------------------
    def set_parent(self, parent: dict | None) -> None:
        self._parent = parent or {}

    def get_parent(self, channel: str = "shell") -> dict:
        """The message the running request answers, as the kernel received it (its header)."""
        return self._parent

    @property
    def parent_header(self) -> dict:
        return self._parent.get("header", {})

    _parent_header = parent_header  # ipykernel < 6

    # -- to the notebook ---------------------------------------------------------------------
    def publish(self, msg_type: str, content: dict, metadata: dict, buffers=None) -> None:
        """One iopub message of the running request (the kernel sends it under the request's parent)."""
        if msg_type == "stream":  # through the cell's own stream: in order with what print() wrote
            self.emitter.write_stream(content.get("name", "stdout"), str(content.get("text", "")))
            return
        self.emitter.event({"type": messages.IOPUB, "msg_type": msg_type, "content": jsonable(content),
                            "metadata": jsonable(metadata or {})}, [bytes(memoryview(b)) for b in buffers or ()])

    # -- from the notebook -------------------------------------------------------------------
    def handle_comm(self, request: dict, buffers: list) -> None:
        """A message from the frontend to a comm here (``comm_msg``, ``comm_close``, ``comm_open``),
        handled as a local kernel's comm manager handles it."""
        msg_type = request.get("msg_type")
        msg = {"header": request.get("header") or {"msg_type": msg_type}, "msg_type": msg_type,
               "parent_header": {}, "content": request.get("content") or {}, "metadata": request.get("metadata") or {},
               "buffers": [memoryview(b) for b in buffers]}
        handler = {"comm_msg": self.comm_manager.comm_msg, "comm_close": self.comm_manager.comm_close,
                   "comm_open": self.comm_manager.comm_open}.get(msg_type)
        if handler is not None:
            handler(None, None, msg)


class WorkerComm(BaseComm):
    """A comm opened on the worker: its messages go to the frontend through the kernel."""

    kernel: WorkerKernel | None = None  # set by install(); ipywidgets sends only when a comm has one

    def __reduce_ex__(self, protocol):
        # a widget (anything holding a comm) stays on its worker, where its comm is: a copy in the
        # kernel would be a second widget that the frontend does not know (it stays a RemoteValue)
        raise TypeError("it holds a comm to the notebook (a widget), which lives on this worker")

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        if self.kernel is None:
            return
        content = {"data": {} if data is None else data, "comm_id": self.comm_id, **keys}
        self.kernel.publish(msg_type, content, metadata or {}, buffers)


class _NotebookDetection:
    """An import hook: before a module that asks "am I in a notebook's kernel?" by looking for
    ipykernel's shell among the imported modules (tqdm.auto), that module is imported, so the
    answer is the one a local kernel gives.  Importing it costs ~0.1 s here, so only code that asks
    pays it (a local kernel paid it at its start)."""

    ASKERS = frozenset({"tqdm.autonotebook", "tqdm.auto"})

    def find_spec(self, name, path=None, target=None):
        if name in self.ASKERS and "ipykernel.zmqshell" not in sys.modules:
            try:
                import ipykernel.zmqshell  # noqa: F401
            except ImportError:
                pass  # an image without ipykernel: the text bar, as in a terminal
        return None  # the usual finders import the module itself


def install(shell, emitter: Emitter) -> WorkerKernel:
    """Give the shell a kernel, and make comms (ipywidgets', any library's) go through it."""
    kernel = WorkerKernel(shell, emitter)
    WorkerComm.kernel = kernel
    shell.kernel = kernel
    if comm_package is not None:
        comm_package.create_comm = WorkerComm
        comm_package.get_comm_manager = lambda: kernel.comm_manager
    if not any(isinstance(f, _NotebookDetection) for f in sys.meta_path):
        sys.meta_path.insert(0, _NotebookDetection())
    return kernel
