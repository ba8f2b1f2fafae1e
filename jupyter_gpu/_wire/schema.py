"""Headers to bytes and back, checked against their definitions in messages.py.

``decode`` validates a header against its type's ``TypedDict`` (msgspec, in C: ~2 us a header,
against ~11 us for ``json.loads`` alone; ``benchmarks/bench_messages.py``), refuses one nested
deeper than ``MAX_DEPTH``, and under ``$JUPYTER_GPU_STRICT_WIRE=1`` (the test suite's) one with a
field its definition lacks; ``encode_header`` writes one.  ``framing.py`` calls both.
"""
# no `from __future__ import annotations`: as in messages.py (msgspec evaluates annotations)
from typing import Any, get_args, get_type_hints

import msgspec

from jupyter_gpu._wire import settings
from jupyter_gpu._wire.messages import TYPES

_DECODERS: dict = {}  # type name -> its Decoder, built when that type is first decoded
_ANY = msgspec.json.Decoder()
_TYPE_AT = len(b'{"type":"')
STRICT = settings.STRICT_WIRE.get() == "1"


class SchemaError(ValueError):
    """A header that is not a message: ``header`` is what it holds as far as it is a JSON object
    (None when it is not one), unvalidated, for the receiver to answer it and skip its frames."""

    def __init__(self, message: str, header: dict | None = None):
        super().__init__(message)
        self.header = header


# how deep a header may nest: far more than any message's structure needs (an execute's is 5 levels,
# a display's JSON a few dozen), and far enough below Python's recursion limit (1000) that a header
# that decoded can be encoded again, relayed and walked by any reader's recursive code (issue 25: one
# nested 100,000 levels deep made the decoder raise RecursionError at the backend's door)
MAX_DEPTH = 256


def decode(raw: bytes) -> dict:
    """The header in ``raw`` (JSON), validated against its type's definition; SchemaError naming
    what is wrong (nested more than MAX_DEPTH levels: too)."""
    try:
        header = _decode(raw)
    except RecursionError:  # (from the C decoder: no header to answer, the connection must go)
        raise SchemaError(f"header is nested more than {MAX_DEPTH} levels deep") from None
    # a header nested d deep has d '[' or '{' and 2d bytes: most are never walked, and of those that
    # are, only the fields whose type holds Any (a typed field's depth is its type's)
    if len(raw) > 2 * MAX_DEPTH and raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _too_deep(header):
        raise SchemaError(f"{header.get('type')!r} message: nested more than {MAX_DEPTH} levels deep",
                          {k: header[k] for k in ("type", "cell", "buffers", "nframes") if k in header})
    return header


def _too_deep(header: dict) -> bool:
    """Does ``header`` nest more than MAX_DEPTH lists or dicts deep?  (Level by level, no recursion.)"""
    kind = header.get("type")
    open_fields = _OPEN.get(kind) if kind in _OPEN else _open_fields(kind)
    level = [header if open_fields is None else [header[k] for k in open_fields if k in header]]
    for _ in range(MAX_DEPTH):
        level = [v for x in level for v in (x.values() if isinstance(x, dict) else x) if isinstance(v, (dict, list))]
        if not level:
            return False
    return True


def _decode(raw: bytes) -> dict:
    kind = None
    if raw.startswith(b'{"type":"'):  # how encode() writes every header: the type is read off it
        end = raw.find(b'"', _TYPE_AT)
        kind = raw[_TYPE_AT:end].decode("utf-8", "replace") if end > 0 else None
    decoder = _DECODERS.get(kind) or _decoder(kind)
    if decoder is None:  # written by someone else, or an unknown type: find out what it is
        try:
            loose = _ANY.decode(raw)
        except msgspec.DecodeError as e:
            raise SchemaError(f"header is not valid JSON: {e}") from None
        if not isinstance(loose, dict) or not isinstance(loose.get("type"), str):
            raise SchemaError("header must be a JSON object with a string 'type'", loose if isinstance(loose, dict) else None)
        kind = loose["type"]
        decoder = _decoder(kind)
        if decoder is None:  # not ours to refuse: the receiver's dispatch answers it ("unknown message type")
            return loose
    try:
        header = decoder.decode(raw)
    except msgspec.ValidationError as e:
        raise SchemaError(f"{kind!r} message: {e}", _loose(raw)) from None
    except msgspec.DecodeError as e:
        raise SchemaError(f"header is not valid JSON: {e}") from None
    if header.get("type") != kind:  # '{"type":"x", ..., "type":"y"}'
        raise SchemaError(f"{kind!r} message: it names its type twice", header)
    if STRICT:
        loose = _loose(raw)
        if loose is None:  # a field the typed decoder skipped holds a number no decoder reads
            raise SchemaError(f"{kind!r} message: a field its definition lacks is not JSON this side reads", header)
        unknown = set(loose) - set(header)
        if unknown:
            raise SchemaError(f"{kind!r} message: it has fields its definition lacks: {sorted(unknown)} "
                                 "(jupyter_gpu/_wire/messages.py)", header)
    return header


_OPEN: dict = {}  # type name -> its fields whose type holds Any (None: an unknown type, all of them)


def _open_fields(kind):
    """The fields of type ``kind`` that may nest without bound, found once (None: not a type of ours)."""
    t = TYPES.get(kind) if isinstance(kind, str) else None
    found = None if t is None else frozenset(k for k, a in get_type_hints(t).items() if _holds_any(a))
    if t is not None:
        _OPEN[kind] = found
    return found


def _holds_any(ann) -> bool:
    if ann is Any:
        return True
    if isinstance(ann, type) and issubclass(ann, dict) and ann is not dict:  # a TypedDict
        return any(_holds_any(a) for a in get_type_hints(ann).values())
    return any(_holds_any(a) for a in get_args(ann))


def _decoder(kind):
    """The Decoder of a known type, built once (None for a type that is not one)."""
    t = TYPES.get(kind) if isinstance(kind, str) else None
    if t is None:
        return None
    decoder = _DECODERS[kind] = msgspec.json.Decoder(t)
    return decoder


def _loose(raw: bytes) -> dict | None:
    """The header as it came, unvalidated (None where even that cannot be read: a number JSON
    writes but no float holds)."""
    try:
        loose = _ANY.decode(raw)
    except msgspec.DecodeError:
        return None
    return loose if isinstance(loose, dict) else None


def _not_json(obj):
    raise TypeError(f"protocol header field of type {type(obj).__name__} is not JSON")


encode_header = msgspec.json.Encoder(enc_hook=_not_json).encode  # dict -> bytes, "type" first as given
