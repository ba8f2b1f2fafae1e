"""The messages the kernel side, the backend and the worker exchange: every type, and its fields.

Framing (how a message becomes frames) is ``framing.py``; this module says what a header may hold.
"""
from __future__ import annotations

# Message types.  Client = the kernel side; events flow backend -> client.
# client -> backend
EXECUTE = "execute"  # run a cell: code, gpu, image (worker image; absent: default), inputs (+ buffers)
INTERRUPT = "interrupt"  # interrupt the running cell (first stop press)
KILL = "kill"  # kill the worker of the running cell (second stop press)
RELEASE = "release"  # give back the session's lease(s)
STATUS = "status"  # ask for the session's workers
PREWARM = "prewarm"  # start (lease) a worker (gpu, image) before the first cell needs it
# backend -> client
WELCOME = "welcome"  # ... offers, default_gpu, images (the worker images a cell may name)
PHASE = "phase"  # queued / cold_start / running, with detail
STATUS_REPLY = "status_reply"
RESEND = "resend"  # the lease changed under the client: send all inputs again
# worker -> backend -> client (cell events)
STREAM = "stream"
DISPLAY = "display"
CLEAR_OUTPUT = "clear_output"
ERROR = "error"
DONE = "done"  # the cell's final event, carrying the names that come back (+ buffers)
INPUT_REQUEST = "input_request"  # the cell called input() / getpass(): {prompt, password}
# client -> backend -> worker (or by the lane)
INPUT_REPLY = "input_reply"  # what the user typed {value}, or why there is nothing {error: {ename, evalue}}
# worker <-> backend
REGISTER = "register"
REGISTERED = "registered"
SHUTDOWN = "shutdown"
# the direct lane (jupyter_gpu/lane.py): a warm cell on the same host skips the backend
STARTED = "started"  # worker -> backend: a lane cell runs on (>20 ms): status shows the worker busy, keep-warm paused
METERED = "metered"  # worker -> backend, once idle: a lane cell ran (status, timings, ended_ago) - the ledger and keep-warm
RETIRE = "retire"  # backend -> worker: keep-warm ran out; exit if you ran no cell since {cells}
RETIRED = "retired"  # worker -> backend: retiring now (an expected exit, not a loss)
REPORT = "report"  # backend -> worker: send the reports you owe now (a kernel asks for its status)
REPORTED = "reported"  # worker -> backend: nothing more owed, once its last running cell ended
LANE_LOST = "lane_lost"  # kernel -> backend: my lane broke mid-cell, what happened? (reply: LANE_LOST_REPLY)
LANE_LOST_REPLY = "lane_lost_reply"
# either way
FAILURE = "failure"  # a request that could not be served: {code, message}


def failure(code: str, message: str, **extra) -> dict:
    return {"type": FAILURE, "code": code, "message": message, **extra}
