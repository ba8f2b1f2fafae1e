"""Values a function call left on its worker (they could not come back): kept there by a short id,
and a kernel's stand-in for one (a RemoteValue with ``ref``) pickles as this module's ``resolve``
of that id, so passing it to a later call or `%%gpu` cell on the same worker moves nothing."""
from __future__ import annotations

import itertools

HELD: dict[str, object] = {}  # (the worker's) id -> the value, for its session
_ids = itertools.count(1)


def keep(value) -> str:
    ref = f"ref{next(_ids)}"
    HELD[ref] = value
    return ref


def resolve(worker: str, ref: str):
    """The value ``ref`` stands for, where it lives (unpickling a reference on its worker)."""
    try:
        return HELD[ref]
    except KeyError:
        raise LookupError(f"the value {ref} of worker {worker} is not here: it lived on that worker, which "
                          "is gone or serves another session now; call the function again") from None


def clear() -> None:
    HELD.clear()
