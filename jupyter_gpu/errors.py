"""The typed exceptions a user can see, and the one table that maps wire error codes to them."""
from __future__ import annotations

import builtins


class GpuError(Exception):
    """Base class of every jupyter-gpu error."""

    code = "internal"

    def _render_traceback_(self):
        # our errors name their cause; the frames of the magic's own code would only hide it
        return [f"{type(self).__name__}: {self}"]


class ConnectionLost(GpuError):
    """The backend could not be reached, or the connection to it broke."""

    code = "connection_lost"


class BackendTimeout(ConnectionLost):
    """The backend answered nothing, not even a ping, for too long (JUPYTER_GPU_BACKEND_DEADLINE),
    or not within a few seconds of a stop press: the cell's wait ended."""

    code = "backend_timeout"


class AuthError(GpuError):
    """The backend refused the token."""

    code = "unauthorized"


class ProtocolMismatch(GpuError):
    """A message did not follow the protocol (or the two sides speak different versions)."""

    code = "protocol"


class NoSuchDevice(GpuError):
    """No runtime offers the requested GPU type."""

    code = "no_device"


class NoSuchImage(GpuError):
    """The cell asked for a worker image (``--image``) the backend does not have; the message lists those it has."""

    code = "no_image"


class WorkerLost(GpuError):
    """The worker died (segfault, OOM, os._exit, killed) while running the cell."""

    code = "worker_lost"


class WorkerStartFailed(GpuError):
    """A worker could not be started."""

    code = "worker_start_failed"


class SerializationError(GpuError):
    """A value could not be pickled or unpickled; the message names the variable."""

    code = "serialization"


class RemoteValueLost(GpuError):
    """A value that lived only on a worker is gone with that worker."""

    code = "remote_value_lost"


class PayloadTooLarge(GpuError):
    code = "payload_too_large"


class FilesTooLarge(PayloadTooLarge):
    """The notebook's directory, synced to a worker that cannot see it, is over $JUPYTER_GPU_SYNC_LIMIT;
    the message names its biggest files and what to do.  Raised before anything is sent."""


class BadRequest(GpuError):
    code = "bad_request"


class UserLimitReached(GpuError):
    """A per-user cap of the backend (``--max-workers-per-user``, ``--max-sessions-per-user``,
    ``--max-queued-per-user``) is reached; the message names it."""

    code = "user_limit"


class BudgetExceeded(GpuError):
    """A session or user budget of the backend is spent: the cell was refused before it started."""

    code = "budget_exceeded"


class ImageBuildFailed(GpuError):
    """A ``jupyter_gpu.Image`` (or ``%%gpu --pip``) could not be built: the installer's own message.
    Raised before any worker is leased or billed."""

    code = "image_build"


class NoSuchCall(GpuError):
    """No spawned call of yours has that id on this backend (or its result was let go)."""

    code = "no_such_job"


class CallLost(GpuError):
    """A spawned call ran when its backend (or its worker) died: its result will never come."""

    code = "job_lost"


class CallCancelled(GpuError):
    """A spawned call was cancelled before it finished."""

    code = "job_cancelled"


class CallTimeout(GpuError, TimeoutError):
    """``FunctionCall.get(timeout=)`` ran out before the call finished (it runs on)."""

    code = "job_timeout"


ERRORS_BY_CODE: dict[str, type[GpuError]] = {
    cls.code: cls
    for cls in (
        GpuError,
        ConnectionLost,
        BackendTimeout,
        AuthError,
        ProtocolMismatch,
        NoSuchDevice,
        NoSuchImage,
        WorkerLost,
        WorkerStartFailed,
        SerializationError,
        RemoteValueLost,
        PayloadTooLarge,
        BadRequest,
        BudgetExceeded,
        UserLimitReached,
        ImageBuildFailed,
        NoSuchCall,
        CallLost,
        CallCancelled,
        CallTimeout,
    )
}


def from_failure(header: dict) -> GpuError:
    """Turn a ``failure`` message ({code, message}) into the matching exception."""
    cls = ERRORS_BY_CODE.get(header.get("code", ""), GpuError)
    return cls(header.get("message", "unknown failure"))


_GROUP = getattr(builtins, "BaseExceptionGroup", ())  # Python 3.11+


def in_group(exc) -> bool:
    """Whether ``exc``, or an exception it happened while handling, is an exception group: IPython
    prints those itself (traceback.print_exc), past ``_render_traceback_``."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, _GROUP):
            return True
        seen.add(id(exc))
        exc = exc.__context__
    return False
