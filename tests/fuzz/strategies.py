"""Hypothesis strategies of hostile wire input, shared by the fuzz tests: headers of every message
type in ``jupyter_gpu/_wire/messages.py`` with each field right, wrongly typed, nested deeply, a huge
integer, or absent; unknown types and fields; and frames truncated, oversized or garbled.

Headers are built as JSON *text* (not through an encoder), so they can hold what no encoder of ours
writes: integers of hundreds of digits, ``NaN``/``Infinity``, nesting thousands of levels deep, a
field named twice.
"""
from __future__ import annotations

import json
import struct
import typing
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from hypothesis import strategies as st

from jupyter_gpu._wire import framing, messages

# -- JSON values, as text ------------------------------------------------------------------------
HUGE_INTS = [2**63, 2**64, -(2**63) - 1, 10**400, -(10**400)]
_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.sampled_from(HUGE_INTS),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
)
json_value = st.recursive(_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                          max_leaves=12)


@st.composite
def deep_text(draw) -> str:
    """A value nested far deeper than any message needs (as text: json.dumps would recurse)."""
    depth = draw(st.sampled_from([64, 500, 3000, 100_000]))
    kind = draw(st.sampled_from(["list", "dict"]))
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


hostile_text = st.one_of(
    json_value.map(json.dumps),
    deep_text(),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "9" * 5000, '"\\ud800"', "1.5e-400"]),
)


# -- the right value of a field's declared type -------------------------------------------------
def right(ann) -> st.SearchStrategy:
    """A value of the annotation ``ann`` (messages.py's field types); Any is any JSON value."""
    origin, args = get_origin(ann), get_args(ann)
    if origin in (typing.NotRequired, typing.Required):
        return right(args[0])
    if origin is typing.Annotated:
        base, *meta = args
        if base is int:
            return st.integers(0, 10**6)
        if base is float:
            return st.floats(0, 1e6)
        return right(base)
    if ann is Any:
        return json_value
    if origin is Union:
        return st.one_of(*(right(a) for a in args))
    if origin is Literal:
        return st.sampled_from(args)
    if origin is list:
        return st.lists(right(args[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(right(args[0]), right(args[1]), max_size=3)
    if ann is type(None):
        return st.none()
    if ann is str:
        return st.text(max_size=20)
    if ann is bool:
        return st.booleans()
    if ann is int:
        return st.integers(-(10**6), 10**6)
    if ann is float:
        return st.floats(-1e6, 1e6)
    if isinstance(ann, type) and issubclass(ann, dict):  # a TypedDict
        hints = get_type_hints(ann, include_extras=True)
        required = getattr(ann, "__required_keys__", frozenset())
        return st.fixed_dictionaries({k: right(hints[k]) for k in required},
                                     optional={k: right(v) for k, v in hints.items() if k not in required})
    raise TypeError(f"no strategy for {ann!r}")


FIELDS = {kind: get_type_hints(t, include_extras=True) for kind, t in messages.TYPES.items()}
# the envelope's fields are framing's (a wrong `buffers` or `nframes` is a frame's fault, fuzzed apart)
ENVELOPE = {"type", "buffers", "nframes"}


@st.composite
def field_text(draw, ann) -> str:
    """A field's value as JSON text: mostly right, else wrongly typed, deep, huge or not JSON."""
    how = draw(st.sampled_from(["right", "right", "right", "hostile"]))
    if how == "right":
        return json.dumps(draw(right(ann)))
    return draw(hostile_text)


@st.composite
def header_text(draw, kinds=None, overrides: dict | None = None) -> bytes:
    """A header of one type (``kinds``: those to choose from; default: every type, or an unknown one)
    as JSON bytes: a choice of its fields, each right or not, and now and then one it lacks."""
    any_kind = st.one_of(st.sampled_from(sorted(messages.TYPES)), st.text(max_size=10))
    kind = draw(any_kind if kinds is None else st.sampled_from(kinds))
    hints = FIELDS.get(kind, {})
    names = sorted(set(hints) - ENVELOPE)
    chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names))) if names else []
    parts = [f'"type":{json.dumps(kind)}']
    for name in chosen:
        if overrides and name in overrides:
            parts.append(f"{json.dumps(name)}:{json.dumps(draw(overrides[name]))}")
        else:
            parts.append(f"{json.dumps(name)}:{draw(field_text(hints[name]))}")
    if draw(st.integers(0, 9)) == 0:  # a field no definition has (STRICT_WIRE refuses it)
        parts.append(f"{json.dumps(draw(st.text(max_size=8)))}:{json.dumps(draw(json_value))}")
    return ("{" + ",".join(parts) + "}").encode("utf-8", "surrogatepass")


def first_frame(header: bytes, inline: bytes = b"") -> bytes:
    return framing._PREFIX.pack(framing.MAGIC, framing.PROTOCOL_VERSION, 0, len(header)) + header + inline


@st.composite
def broken_frame(draw) -> bytes:
    """A first frame that is not one: too short, a wrong magic or version, a header length past its
    end or over MAX_HEADER, a header that is no JSON object, or a payload that is not what it lists."""
    header = draw(header_text(kinds=["status", "interrupt", "execute"]))
    frame = first_frame(header)
    how = draw(st.sampled_from(["truncate", "magic", "version", "hlen", "not_object", "garbage",
                                "inline", "buffers", "nframes"]))
    if how == "truncate":
        return frame[: draw(st.integers(0, len(frame) - 1))]
    if how == "magic":
        return b"XX" + frame[2:]
    if how == "version":
        return frame[:2] + bytes([draw(st.integers(2, 255))]) + frame[3:]
    if how == "hlen":
        hlen = draw(st.sampled_from([len(header) + 1, framing.MAX_HEADER + 1, 2**32 - 1]))
        return frame[:4] + struct.pack("<I", hlen) + frame[8:]
    if how == "not_object":
        return first_frame(draw(st.sampled_from([b"[]", b"1", b'"x"', b"null", b"{", b"", b'{"type":1}'])))
    if how == "garbage":
        return first_frame(draw(st.binary(max_size=64)))
    if how == "inline":  # bytes the header does not list
        return frame + draw(st.binary(min_size=1, max_size=64))
    if how == "buffers":
        value = draw(st.sampled_from([[-1], [10**400], ["3"], 5, [2**40] * 100, [1.5], [3, 4]]))
    else:
        value = draw(st.sampled_from([-1, 10**400, "2", 7, 1.0, 0]))
    return first_frame(header[:-1] + f',"{how}":{json.dumps(value)}}}'.encode())
