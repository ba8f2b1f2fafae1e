"""A `%%gpu` cell's options and text, as its execute request carries them: small pure functions."""
from __future__ import annotations

from dataclasses import dataclass

from jupyter_gpu._wire import serialization
from jupyter_gpu._wire import settings


@dataclass
class CellOptions:
    gpu: str | None = None
    inputs: list | None = None
    out: list | None = None
    no_out: bool = False
    keep_remote: list | None = None  # names that stay on the worker (--keep-remote)
    keep_warm: float | None = None
    timeout: float | None = None
    max_cost: float | None = None  # USD: interrupt once the cell's billed cost passes it (cost/limit.py)
    image: object = None  # the worker image (--image; _wire/pools.py): a name, a jupyter_gpu.Image or the
    # name of a kernel variable holding one; None: `%gpu config`'s, else default (cell.placement: a name then)
    pip: str | None = None  # --pip "REQ ...": the image plus these packages (notebook/image.py)
    image_spec: dict | None = None  # a jupyter_gpu.Image's spec, its request's (cell.placement)
    line: str = ""  # the magic's own line


def positive(text: str) -> float:
    """A --timeout or --max-cost: a number above zero (a negative one would stop the cell at once)."""
    value = float(text)
    if not value > 0:
        raise ValueError(f"{text!r} is not above zero")
    return value


positive.__name__ = "positive number"  # argparse names the type in its message


MAX_RETURN_ENV = settings.MAX_RETURN.name  # default: serialization.MAX_RETURN


def remote_limits(keep_remote: list | None) -> dict:
    """What stays on the worker: the names given, and any value larger than the limit, unless
    ``--out`` names it.  Only what differs from the worker's default goes into the request."""
    limits = {"keep_remote": keep_remote} if keep_remote else {}
    text = settings.MAX_RETURN.get()
    if text:
        limits["max_return"] = serialization.parse_size(text, MAX_RETURN_ENV)
    return limits


def nested_magic(cell_source: str) -> bool:
    """Whether the body starts with another cell magic (``%%gpu`` then ``%%time``, ``%%bash``)."""
    return cell_source.lstrip(" \t\n").startswith("%%")


def nested_binds(cell_source: str) -> frozenset:
    """The names a nested cell magic's own line binds: ``%%capture NAME`` stores what it
    captured in NAME (its other options are flags)."""
    first = cell_source.lstrip(" \t\n").partition("\n")[0].split()
    if not first or first[0] != "%%capture":
        return frozenset()
    names = [a for a in first[1:] if not a.startswith("-")]
    return frozenset(names[:1]) if names and names[0].isidentifier() else frozenset()

