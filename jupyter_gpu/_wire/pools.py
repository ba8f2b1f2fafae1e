"""Pool keys and image names (``%%gpu --image NAME``), shared by the kernel side and the backend.

A pool, a lease and what the kernel holds on a worker are per (GPU type, image).  Their key is one
string: the GPU spec alone for the ``default`` image (so everything that predates images keeps its
keys: ``cpu``, ``A100:2``), ``GPU@IMAGE`` for a named one (``cpu@a``).  Image names cannot hold
``@``, so the key splits back unambiguously.
"""
from __future__ import annotations

import re

DEFAULT_IMAGE = "default"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def check_name(name: str) -> str:
    """``name`` if it is a valid image name, else ValueError saying what one looks like."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(f"bad image name {name!r}: letters, digits, '_', '.', '-' (not first), at most 63")
    return name


def pool_key(gpu: str, image: str | None) -> str:
    """The key of the (GPU type, image) pool: ``gpu`` for the default image, else ``gpu@image``."""
    return gpu if not image or image == DEFAULT_IMAGE else f"{gpu}@{image}"


def split_key(key: str) -> tuple[str, str]:
    """``pool_key``'s inverse: "cpu@a" -> ("cpu", "a"), "cpu" -> ("cpu", "default")."""
    gpu, at, image = key.partition("@")
    return gpu, image if at else DEFAULT_IMAGE
