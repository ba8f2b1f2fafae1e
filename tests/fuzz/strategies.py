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


@st.composite
def hostile_text(draw) -> str:
    """A field's value as JSON text that its type does not expect: mostly another JSON value (a
    wrongly typed field, a huge integer), else nested deeply, else what JSON has not (NaN, 1e400)."""
    how = draw(st.sampled_from(["json"] * 12 + ["deep", "token"]))  # (most of the others close the connection)
    if how == "json":
        return json.dumps(draw(json_value))
    if how == "deep":
        return draw(deep_text())
    return draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "9" * 5000, '"\\ud800"',
                                 "1.5e-400"]))


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
    return draw(hostile_text())


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
        parts.append(f"{json.dumps(draw(st.text(max_size=8)))}:{draw(hostile_text())}")
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


# -- a kernel's messages, for the backend's door --------------------------------------------------
# safe cell bodies: the point is the protocol, not what a cell may do (a cell runs any code anyway)
CODE = st.one_of(st.sampled_from(["pass", "1 + 1", "print('fuzz')", "x = 1", "x", "raise ValueError('v')"]),
                 st.text(max_size=20).map(lambda t: "# " + t.replace("\n", " ")))
CELL = st.one_of(st.integers(0, 10**9).map(lambda n: f"f{n}"), st.just("dup"))
# each kernel message type, with the fields that make it a real request; weight: how often it comes
# (a valid kill, release or prewarm costs a cold start: rare, on a 2-core machine)
KERNEL = {
    "execute": (40, {"cell": CELL, "code": CODE, "gpu": st.sampled_from(["cpu"] * 9 + ["Z9000"]),
                     "inputs": st.just({}), "keep": st.just({}), "binds": st.just([])}),
    "interrupt": (10, {"cell": CELL}),
    "kill": (3, {"cell": CELL, "gpu": st.sampled_from(["Z9000"] * 9 + ["cpu"])}),
    "input_reply": (5, {"cell": CELL, "value": st.text(max_size=5)}),
    "lane_lost": (3, {"cell": CELL, "gpu": st.just("cpu"), "worker": st.text(max_size=5)}),
    "prewarm": (1, {"gpu": st.sampled_from(["cpu", "Z9000"]), "keep_warm": st.floats(0, 5)}),
    "status": (5, {}),
    "release": (1, {}),
    "job_get": (3, {"cell": CELL, "job": st.text(max_size=8), "timeout": st.floats(0, 1)}),
    "job_cancel": (3, {"job": st.text(max_size=8)}),
    "job_info": (3, {"job": st.text(max_size=8)}),
    "jobs": (3, {"notebook": st.text(max_size=8)}),
}
if "ack" in messages.TYPES:
    KERNEL["ack"] = (3, {"upto": st.integers(0, 100)})


def _shaped(*keys: str) -> st.SearchStrategy:
    """A `dict[str, Any]` field with the keys its readers look for, each holding any JSON value."""
    return st.fixed_dictionaries({}, optional={k: json_value for k in keys})


# right values that keep a fuzzed session from holding workers for long (a keep-warm is up to 24 h),
# and the untyped fields (`dict[str, Any]`) with the keys their readers look for, anything in them
RIGHT = {"keep_warm": st.floats(0, 5), "timeout": st.floats(0, 1),
         "call": _shaped("fn", "fn_hash", "name", "source", "args", "items", "return_exceptions"),
         "job": _shaped("notebook", "map", "return_exceptions"),
         "image_spec": _shaped("base", "layers", "hashes", "name"),
         "sync": _shaped("root", "base", "put", "drop"),
         "comm": _shaped("msg_type", "header", "content", "metadata"),
         "parent": _shaped("header")}
_KINDS = [k for k, (w, _) in KERNEL.items() for _ in range(w)]


@st.composite
def kernel_message(draw) -> list[bytes]:
    """One message a hostile kernel sends, as its frames: a real request of a kernel's types (now and
    then another side's type, or none of ours) with 0-3 of its fields made hostile (wrongly typed,
    deep, huge, not JSON, or another of the type's fields with any value), and now and then buffers:
    inline, in follow-on frames, or frames that do not add up to what the header declares."""
    roll = draw(st.integers(0, 99))  # (hypothesis draws small numbers most: the rare cases are the large)
    if roll >= 99:
        return [draw(broken_frame())]
    kind = draw(st.sampled_from(_KINDS)) if roll < 95 else draw(st.one_of(
        st.sampled_from(sorted(set(messages.TYPES) - set(KERNEL))), st.text(max_size=10)))
    base = KERNEL.get(kind, (0, {}))[1]
    fields = {name: json.dumps(draw(s)) for name, s in base.items()}
    hints = FIELDS.get(kind, {})
    others = sorted(set(hints) - ENVELOPE - set(base))
    for name in draw(st.lists(st.sampled_from(others), unique=True, max_size=3)) if others else []:
        fields[name] = json.dumps(draw(RIGHT[name] if name in RIGHT else right(hints[name])))
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 1, 1, 1, 2, 2, 3]))):
        name = draw(st.one_of(st.sampled_from(sorted(set(hints) - ENVELOPE) or ["cell"]), st.text(max_size=6)))
        if draw(st.booleans()) and name in fields:
            del fields[name]
        else:
            fields[name] = draw(hostile_text())
    parts = [f'"type":{json.dumps(kind)}'] + [f"{json.dumps(k)}:{v}" for k, v in fields.items()]
    buffers = draw(st.sampled_from(["none"] * 56 + ["inline", "inline", "follow", "short", "long"]))
    frames: list[bytes] = []
    inline = b""
    if buffers == "inline":
        inline = draw(st.binary(max_size=32))
        parts.append(f'"buffers":[{len(inline)}]')
    elif buffers != "none":  # over INLINE_MAX: follow-on frames
        n = framing.INLINE_MAX + 1
        parts.append(f'"buffers":[{n}],"nframes":1')
        frames = [{"follow": b"x" * n, "short": b"x" * (n - 1), "long": b"x" * (n + 1)}[buffers]]
    header = ("{" + ",".join(parts) + "}").encode("utf-8", "surrogatepass")
    return [first_frame(header, inline)] + frames
