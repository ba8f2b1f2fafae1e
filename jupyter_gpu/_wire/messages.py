"""Every message the kernel side, the backend and the worker exchange: one typed definition each.

A message is a header (a JSON object with a string ``type``) and its buffers (``framing.py``). Each
type below is a ``TypedDict``: the fields it may carry and their types. ``framing.parse_first``
validates every header it decodes against its type's definition (``schema.decode``: msgspec, in C: ~2 us a header,
against ~11 us for ``json.loads`` alone; ``benchmarks/bench_messages.py``), so a string
``keep_warm``, a float where an int belongs, ``NaN``, or a list where a dict belongs is refused where
it arrives, naming the field (``InvalidMessage``), and code past the decoder can trust the types.

Headers stay plain dicts (not msgspec Structs, which decode ~0.7 us faster): a relay forwards them
as they are, absent optional fields stay absent, and every reader keeps ``h["cell"]`` /
``h.get("refs")``.  See docs/decisions.md, "Typed messages".

Fields are added, never changed in meaning, within a protocol version: a field a side does not know
is ignored (dropped when decoded); so is every field's absence (a reader says what it defaults to),
and a type the decoder does not know passes as it came, for the receiver to refuse.  ``$JUPYTER_GPU_STRICT_WIRE=1`` (the test suite sets it) refuses
unknown fields instead, so a field missing from its definition here is found by the tests.

Who sends what: client = the kernel side (or the lane's kernel end); every event the backend sends
to a kernel carries ``seq``, the session's sequence number.
"""
# no `from __future__ import annotations`: msgspec would eval every field's annotation from its
# string (153 compile() calls, ~10 ms a fresh worker process pays at import)
import sys
from typing import Any, Literal, Optional, TypedDict

import msgspec

if sys.version_info >= (3, 11):
    from typing import Annotated, NotRequired
else:  # pragma: no cover - Python 3.10
    from typing_extensions import Annotated, NotRequired


# -- field types ---------------------------------------------------------------------------------
# an integer a ledger column (SQLite INTEGER, PostgreSQL BIGINT) and every reader's C code holds: JSON
# has no bound, and a 400-digit exec_count or pid got past the decoder before (issue 25)
INT64 = 2**63 - 1
Int = Annotated[int, msgspec.Meta(ge=-INT64 - 1, le=INT64)]
Count = Annotated[int, msgspec.Meta(ge=0, le=INT64)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]  # JSON has no NaN; msgspec refuses out-of-range numbers
Name = str
Timings = dict[str, float]  # phase -> seconds (load, exec, post, run, queue, cold_start, worker_start)


class BufferRef(TypedDict, total=False):
    """Where one buffer of a value is: wire buffer ``w``, or a lent shared-memory segment."""

    w: Count
    shm: str
    n: Count


class Joint(TypedDict):
    """One of the names pickled together because their values share objects (``_wire/sharing.py``)."""

    n: Count  # its place in the group's unpickling
    r: list[Name]  # names the receiver holds unchanged whose values the group refers to


class Value(TypedDict):
    """A pickled value: content hash, type name, its pickle and its out-of-band buffers."""

    h: str
    t: str
    p: BufferRef
    b: list[BufferRef]
    g: NotRequired[Joint]  # in a group with the other names of the message that have its hash ``h``
    i: NotRequired[bool]  # done: an input the cell changed in place (the kernel updates its own object)


class KeptValue(TypedDict, total=False):
    """A value that stays on the worker (``done.refs``): its reference hash, type, and why."""

    h: str
    t: str
    why: str


class LaneGrant(TypedDict):
    """A worker's direct lane: its Unix socket and the secret a kernel shows."""

    path: str
    secret: str


class InputError(TypedDict):
    """Why ``input()`` gets no value: the exception a local cell would have raised."""

    ename: str
    evalue: str


class _Envelope(TypedDict, total=False):
    """What framing and the relay add to any message."""

    type: str  # the one field every message must have (framing checks it)
    buffers: list[Count]  # the payload buffers' sizes (framing.py)
    nframes: Count  # follow-on frames (framing.py)
    seq: Count  # backend -> kernel: the session's sequence number
    wseq: Count  # worker -> backend: the worker's own message number (a resumed connection sends again after it)


# -- kernel -> backend ---------------------------------------------------------------------------
class Execute(_Envelope, total=False):
    """Run a cell (kernel -> backend -> worker, or by the lane)."""

    cell: str
    code: str  # the cell's body: its lines numbered as the same text run as a local cell
    # the name the kernel's compiler gives that text as a local cell (ipykernel: <tmp>/ipykernel_<pid>/<hash>.py)
    file: str
    # the kernel's input history, sent with a cell whose text reads it (notebook/cell_code.py):
    # {"raw": [...], "parsed": [...]} (a parsed entry null where it is the raw one)
    history: dict[str, list[Optional[str]]]
    gpu: str
    image: Optional[str]  # a worker image; absent or null: default
    # a jupyter_gpu.Image's spec (_wire/imagespec.py): {base, layers, hashes, name}; `image` is its name
    image_spec: dict[str, Any]
    exec_count: Count
    inputs: dict[Name, Value]
    keep: dict[Name, str]  # held by the worker unchanged: name -> hash
    references: list[Name]  # held here as RemoteValues: the worker's copy is the value
    expect_worker: Optional[str]  # the worker those values are on
    binds: list[Name]
    out: Optional[list[Name]]
    no_out: bool
    keep_remote: Optional[list[Name]]
    max_return: Count  # bytes ($JUPYTER_GPU_MAX_RETURN)
    shm: bool  # buffers may be lent as shared memory
    keep_warm: Optional[Seconds]
    returned: list[str]  # the worker's segments whose values died in the kernel
    session: str  # added by the backend (or the worker, for a lane cell)
    ack: Count  # the kernel has its session's events up to this ``seq`` (as ``Ack``)
    uid: Count  # added by the backend: the sandboxed worker's user's uid (local runtime under --users)
    # the kernel's request this one serves, {"header": ...}: `get_ipython().kernel.get_parent()`
    # on the worker (ipywidgets' Output captures by its msg_id)
    parent: dict[str, Any]
    # instead of code: a frontend's message to a comm on the worker (notebook/comms.py):
    # msg_type (comm_msg, comm_close, comm_open), header, content, metadata; its buffers are the frames
    comm: dict[str, Any]
    cwd: str  # the kernel's working directory: the cell runs there (where the worker sees it)
    # that directory's identity, [st_dev, st_ino] (a bind mount keeps both): a worker with another
    # directory at the same path (a container's own /tmp) does not run the cell there
    cwd_id: Optional[list[Count]]  # null: the kernel could not stat it
    # the kernel's directory for a worker that cannot see it (notebook/files.py): root, base (the
    # digest the kernel believes the worker's mirror has; "" from nothing), put ([path, size,
    # mtime_ns, hash, buffer, offset]: the bytes among the request's buffers), drop, check (true: the
    # files were read as they were sent, _wire/filestream.py: one whose bytes do not hash to its entry
    # changed meanwhile and is not written)
    sync: dict[str, Any]
    env: dict[str, Optional[str]]  # the variables the notebook set (%env, os.environ) -> value; null: unset
    path: list[str]  # the kernel's own sys.path entries (a directory of the notebook's code)
    # the kernel's installed versions of the packages the cell imports or ships values of (notebook/uses.py),
    # {module: version}, absent when none: the worker shows a table of those it differs in (_wire/versions.py)
    versions: dict[str, str]
    # of those, the ones whose distribution is named otherwise ({"PIL": "Pillow"}): what the backend
    # pins when it brings the kernel's versions to a worker that lacks them (scheduling/follow.py)
    dists: dict[str, str]
    # added by the backend: a directory of the kernel's versions of what the notebook's cells used that
    # the worker's image lacks or has at others, put before its site-packages (scheduling/follow.py)
    follow: str
    # instead of code: a function's call (jupyter_gpu/functions/): fn (a value) or fn_hash (held
    # there), source [file, cell number, text] of its defining cell, args (a value: (args, kwargs))
    # or items (a value: a map's batch of them) with return_exceptions
    call: dict[str, Any]
    # a spawned call (`f.spawn`): the backend owns it, answers `job_reply` at once and keeps its
    # events and result (jupyter_gpu_backend/scheduling/jobs.py): notebook (whose calls it is),
    # map (a spawn_map: its result is a batch's), return_exceptions
    job: dict[str, Any]


class JobGet(_Envelope, total=False):
    """A spawned call's events and result, replayed under ``cell`` (then live, while it runs);
    ``timeout``: seconds to wait for its end (absent: as long as it runs), then ``failure job_timeout``."""

    cell: str
    job: str
    timeout: Optional[Seconds]
    after: Count  # output events the asking cell has shown already (an earlier get of it that timed out)


class JobCancel(_Envelope, total=False):
    """Stop a spawned call (queued: it never starts; running: interrupted, then killed); answered
    by ``job_reply`` once it has ended."""

    job: str


class JobInfo(_Envelope, total=False):
    """What is known of a spawned call; answered by ``job_reply`` (or ``failure no_such_job``)."""

    job: str


class JobList(_Envelope, total=False):
    """This user's spawned calls from ``notebook`` (newest first); answered by ``jobs_reply``."""

    notebook: str


class Interrupt(_Envelope, total=False):
    """The stop button's first press (kernel -> backend -> worker, or by the lane)."""

    cell: str


class Kill(_Envelope, total=False):
    """The second press: the backend kills the worker (for a lane cell: the lease's worker)."""

    cell: str
    gpu: Optional[str]
    image: Optional[str]


class Ack(_Envelope, total=False):
    """The kernel has every event of its session up to ``upto`` (a ``seq``): the backend forgets
    them (it keeps the others to replay to a kernel that reconnects, ``_client/connection.py``)."""

    upto: Count


class Release(_Envelope, total=False):
    """Give back the session's leases; answered by ``status_reply`` with ``released``."""


class Status(_Envelope, total=False):
    """Ask for the session's workers; answered by ``status_reply``."""


class Prewarm(_Envelope, total=False):
    """Start (lease) a worker before the first cell needs it; answered by ``status_reply``."""

    gpu: Optional[str]
    keep_warm: Optional[Seconds]
    image: Optional[str]


class InputReply(_Envelope, total=False):
    """What the user typed for the cell's ``input()``, or why there is nothing."""

    cell: str
    value: str
    error: InputError


# -- backend -> kernel ---------------------------------------------------------------------------
class Welcome(_Envelope, total=False):
    """The first message on a kernel's connection."""

    protocol: Int
    version: str
    session: str
    host_id: Optional[str]  # when the workers share the kernel's host (shared memory, lanes)
    runtime: str
    offers: list[str]
    default_gpu: str
    devices: dict[str, Count]  # the most devices a worker may get, per type ("A100:2")
    images: list[str]
    files: str  # "sync": its workers never see the kernel's directory; "auto": each worker says


class Phase(_Envelope, total=False):
    """Where a waiting cell is: queued (with its position), cold_start (with what it waits for), running."""

    cell: str
    phase: Literal["queued", "build", "cold_start", "running"]
    position: Count
    gpu: str
    detail: str


class Lease(TypedDict, total=False):
    gpu: str
    device: str
    worker: str
    state: str
    keep_warm: Optional[float]
    keep_warm_left: Optional[float]
    pool: str
    image: str


class StatusReply(_Envelope, total=False):
    """The session's workers, what the runtime offers, and what a release or prewarm did."""

    leases: list[Lease]
    offers: list[str]
    runtime: str
    images: list[str]
    warm_pool: dict[str, Any]
    dedicated: dict[str, Any]
    autoscale: dict[str, Any]
    released: Count
    prewarmed: dict[str, Any]  # gpu, image, worker, device, cold_start, started


class Resend(_Envelope, total=False):
    """The kernel counted on values the worker does not hold: it sends them all again."""

    cell: str
    reason: str
    names: list[Name]
    files: bool  # the worker does not see the kernel's directory: send it (`sync`) from now on


class Failure(_Envelope, total=False):
    """A request that could not be served; ``code`` is a key of ``errors.ERRORS_BY_CODE``."""

    code: str
    message: str
    cell: Optional[str]


class JobReply(_Envelope, total=False):
    """A spawned call: its id, state (queued, running, done, failed, cancelled, lost, expired) and
    what it is; ``cell``: the kernel's request it answers (a spawn's execute)."""

    cell: Optional[str]
    job: str
    state: str
    function: Optional[str]
    notebook: Optional[str]
    gpu: Optional[str]
    created: Optional[float]  # seconds since the epoch
    finished: Optional[float]
    expires: Optional[float]  # when its result is let go
    cause: Optional[str]
    map: bool
    return_exceptions: bool


class JobsReply(_Envelope, total=False):
    jobs: list[dict[str, Any]]  # JobReply's fields, one dict a call


# -- worker -> backend -> kernel: a cell's events ------------------------------------------------
class Stream(_Envelope, total=False):
    cell: str
    name: Literal["stdout", "stderr"]
    text: str


class Display(_Envelope, total=False):
    cell: str
    kind: Literal["display_data", "execute_result"]
    data: dict[str, Any]
    metadata: dict[str, Any]
    transient: dict[str, Any]
    update: bool
    bulk: Count  # a large display: data and metadata are this JSON buffer


class ClearOutput(_Envelope, total=False):
    cell: str
    wait: bool


class Error(_Envelope, total=False):
    """A cell's exception: as text, or (``pickled``) the exception itself."""

    cell: str
    ename: str
    evalue: str
    traceback: list[str]
    pickled: Value


class Iopub(_Envelope, total=False):
    """A message that code on the worker sent to the notebook through the kernel (a comm's, or
    ``kernel.session.send(kernel.iopub_socket, ...)``): the kernel publishes it under the cell's
    parent.  Its buffers are the frames."""

    cell: str
    msg_type: str
    content: dict[str, Any]
    metadata: dict[str, Any]


class Item(_Envelope, total=False):
    """One value a generator function yielded on the worker (``f.remote_gen``), as it came."""

    cell: str
    value: Value


class Payload(_Envelope, total=False):
    """What a local cell's shell puts in its ``execute_reply``'s payload: the pager's text
    (``obj?``, ``%magic``, ``%quickref``; source ``page``): the kernel pages it with its own pager."""

    cell: str
    source: Literal["page"]
    data: dict[str, Any]  # a mime bundle: text/plain (and text/html)
    start: Count  # the line to show first


class InputRequest(_Envelope, total=False):
    cell: str
    prompt: str
    password: bool


class Done(_Envelope, total=False):
    """A cell's final event: its status, timings and what comes back.  The worker sends the
    results; whoever placed the cell adds where it ran (``placed``)."""

    cell: str
    status: Literal["ok", "error", "interrupted", "killed", "lost", "resend"]
    timings: Timings
    values: dict[Name, Value]
    refs: dict[Name, KeptValue]
    missing: list[Name]
    deleted: list[Name]
    returned: list[str]  # the kernel's segments whose values died on the worker
    telemetry: dict[str, Any]  # peak GPU memory, mean utilisation (NVML)
    cwd: str  # the cell changed directory (os.chdir, %cd): the kernel follows, as after a local cell
    # a synced directory (Execute.sync): the mirror's digest, what the cell put/dropped there (as
    # Execute.sync's; buffers after the values'), or `over` (too much to bring back: why)
    files: dict[str, Any]
    result: Value  # a function call's value (a batch's: [(ok, value or exception), ...])
    result_error: str  # why a call's value could not be pickled to come back
    result_ref: dict[str, Any]  # a call's value left on the worker: ref (its id there), t (type), why
    # where it ran (the backend for a relayed cell, the kernel for a lane cell)
    worker: Optional[str]
    gpu: str
    image: str
    device: str
    cold: bool
    pool: str
    keep_warm: Optional[float]
    lane: LaneGrant
    start_method: str


# -- worker <-> backend --------------------------------------------------------------------------
class Register(_Envelope, total=False):
    worker: str
    pid: Int
    host_id: Optional[str]
    python: str
    ipython: str
    startup_s: float
    lane: Optional[LaneGrant]
    gpu: str
    device: str
    memory_bytes: Optional[Int]
    index: Optional[Int]


class Registered(_Envelope, total=False):
    worker: str
    resume: str  # the key a worker shows to resume its dropped connection (X-Worker-Resume)
    got: Count  # on a resumed connection: the last of the worker's messages (wseq) the backend took
    heartbeat: float  # seconds between the worker's heartbeats (absent: it sends none)


class Heartbeat(_Envelope, total=False):
    """worker -> backend, every ``heartbeat`` seconds, from its reader thread (not the cell's): it
    is there.  A worker silent past the backend's --worker-heartbeat is hung: killed, its cell failed."""


# a worker's exit status when its own machinery (not the cell's code) ran out of memory, or failed otherwise
EXIT_OUT_OF_MEMORY, EXIT_WORKER_FAILED = 75, 70


class Shutdown(_Envelope, total=False):
    pass


class Started(_Envelope, total=False):
    """A lane cell runs on (over 20 ms): the worker is busy, keep-warm paused."""

    cell: str


class Metered(_Envelope, total=False):
    """A lane cell ran: the ledger and keep-warm (dated back by ``ended_ago``)."""

    cell: str
    status: str
    timings: Timings
    keep_warm: Optional[float]
    ended_ago: float
    function: str  # a function's call: its name@hash (the ledger's `function`)


class Retire(_Envelope, total=False):
    """Keep-warm ran out: exit if you ran no cell since ``cells``."""

    cells: Count


class Retired(_Envelope, total=False):
    cells: Count


class Report(_Envelope, total=False):
    """Send the reports you owe now (a kernel asks for its status)."""


class Reported(_Envelope, total=False):
    """Nothing more owed."""


# -- the lane: its handshake (kernel -> worker), and a kernel's question when it broke -------------
class LaneHello(_Envelope, total=False):
    secret: str
    session: Optional[str]


class LaneOk(_Envelope, total=False):
    pass


class LaneLost(_Envelope, total=False):
    """kernel -> backend: the kernel's lane broke mid-cell: what happened to it?"""

    cell: str
    gpu: str
    worker: Optional[str]


class LaneLostReply(_Envelope, total=False):
    """backend -> kernel: whether the cell ran (and died with its worker: how), or never began."""

    cell: Optional[str]
    ran: bool
    status: str
    message: str
    device: str
    gpu: str


# -- the table -----------------------------------------------------------------------------------
EXECUTE, INTERRUPT, KILL, RELEASE, STATUS, PREWARM = "execute", "interrupt", "kill", "release", "status", "prewarm"
INPUT_REPLY, LANE_LOST, WELCOME, PHASE, STATUS_REPLY = "input_reply", "lane_lost", "welcome", "phase", "status_reply"
RESEND, LANE_LOST_REPLY, FAILURE, STREAM, DISPLAY = "resend", "lane_lost_reply", "failure", "stream", "display"
CLEAR_OUTPUT, ERROR, INPUT_REQUEST, DONE, REGISTER = "clear_output", "error", "input_request", "done", "register"
REGISTERED, SHUTDOWN, STARTED, METERED, RETIRE = "registered", "shutdown", "started", "metered", "retire"
RETIRED, REPORT, REPORTED, LANE_HELLO, LANE_OK = "retired", "report", "reported", "lane_hello", "lane_ok"
IOPUB, PAYLOAD, ITEM = "iopub", "payload", "item"
ACK, HEARTBEAT = "ack", "heartbeat"
JOB_GET, JOB_CANCEL, JOB_INFO, JOB_LIST, JOB_REPLY, JOBS_REPLY = ("job_get", "job_cancel", "job_info", "jobs",
                                                                "job_reply", "jobs_reply")
# the message types an `iopub` event may carry (the kernel publishes no other for a worker: a status
# or an execute_input is the kernel's own protocol)
IOPUB_TYPES = frozenset({"stream", "display_data", "update_display_data", "clear_output", "execute_result",
                         "error", "comm_open", "comm_msg", "comm_close"})
TYPES: dict[str, type] = {
    EXECUTE: Execute, INTERRUPT: Interrupt, KILL: Kill, RELEASE: Release, STATUS: Status, PREWARM: Prewarm,
    INPUT_REPLY: InputReply, LANE_LOST: LaneLost, WELCOME: Welcome, PHASE: Phase, STATUS_REPLY: StatusReply,
    RESEND: Resend, LANE_LOST_REPLY: LaneLostReply, FAILURE: Failure, STREAM: Stream, DISPLAY: Display,
    CLEAR_OUTPUT: ClearOutput, ERROR: Error, INPUT_REQUEST: InputRequest, DONE: Done, REGISTER: Register,
    REGISTERED: Registered, SHUTDOWN: Shutdown, STARTED: Started, METERED: Metered, RETIRE: Retire,
    RETIRED: Retired, REPORT: Report, REPORTED: Reported, LANE_HELLO: LaneHello, LANE_OK: LaneOk,
    IOPUB: Iopub, PAYLOAD: Payload, ITEM: Item, JOB_GET: JobGet, JOB_CANCEL: JobCancel, JOB_INFO: JobInfo,
    JOB_LIST: JobList, JOB_REPLY: JobReply, JOBS_REPLY: JobsReply, ACK: Ack, HEARTBEAT: Heartbeat,
}

# -- constructors ----------------------------------------------------------------------------------
def failure(code: str, message: str, **extra) -> dict:
    return {"type": FAILURE, "code": code, "message": message, **extra}


def function_label(call: dict | None) -> str | None:
    """A function call's name in the ledger: ``name@`` and the first 12 hex of its pickle's hash."""
    if not call or not isinstance(call, dict):
        return None
    fn = call.get("fn")  # (a `dict[str, Any]` on the wire: what a client put there, typed by no one)
    digest = call.get("fn_hash") or (fn.get("h") if isinstance(fn, dict) else None) or ""
    return f"{str(call.get('name') or '?')[:200]}@{str(digest)[:12]}"


def done(cell: str, status: str, timings: dict | None = None, **fields) -> dict:
    """A cell's final event (``Done``): the one constructor every sender uses."""
    return {"type": DONE, "cell": cell, "status": status, "timings": dict(timings or {}), **fields}


def placed(done_header: dict, **where) -> dict:
    """Add where a cell ran to its ``done`` (worker, gpu, image, device, cold, pool, keep_warm, lane,
    start_method): the backend for a relayed cell, the kernel for one that went by the lane."""
    unknown = set(where) - _PLACEMENT
    if unknown:
        raise TypeError(f"not where a cell ran: {sorted(unknown)}")
    done_header.update(where)
    return done_header


_PLACEMENT = frozenset({"worker", "gpu", "image", "device", "cold", "pool", "keep_warm", "lane", "start_method"})
