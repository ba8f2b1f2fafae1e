"""The frame decoder fuzzed in process (``framing.parse_first`` and ``schema.decode``): any bytes,
and headers of every message type with hostile fields, end in a header every field of which has its
declared type, or in a ``ProtocolError`` naming the cause - never another exception (a RecursionError
of a deeply nested header reached the backend's door before; issue 25).

Bounded and reproducible: derandomized, no example database.
"""
from __future__ import annotations

import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_gpu._wire import framing, schema

from .strategies import FIELDS, broken_frame, first_frame, header_text

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=400,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LIMIT = 2**63 - 1  # what a ledger column (SQLite INTEGER, PostgreSQL BIGINT) holds


def conforms(value, ann) -> bool:
    """Does ``value`` have the declared type ``ann`` (ints in range, floats finite)?"""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin in (typing.NotRequired, typing.Required, typing.Annotated):
        return conforms(value, args[0])
    if ann is typing.Any:
        return True
    if origin is typing.Union:
        return any(conforms(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if ann is type(None):
        return value is None
    if ann is bool:
        return isinstance(value, bool)
    if ann is int:
        return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= LIMIT
    if ann is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
            and abs(value) != float("inf")
    if ann is str:
        return isinstance(value, str)
    if origin is list:
        return isinstance(value, list) and all(conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(conforms(k, args[0]) and conforms(v, args[1]) for k, v in value.items())
    if isinstance(ann, type) and issubclass(ann, dict):
        hints = typing.get_type_hints(ann, include_extras=True)
        return isinstance(value, dict) and all(k in hints and conforms(v, hints[k]) for k, v in value.items())
    raise TypeError(ann)


def _depth(value, limit: int = 200) -> int:
    depth, level = 0, [value]
    while level and depth <= limit:
        depth += 1
        level = [v for x in level if isinstance(x, (list, dict)) for v in (x.values() if isinstance(x, dict) else x)]
    return depth


def decode_frame(frame: bytes):
    """parse_first's answer: (header, inline), or the ProtocolError; anything else fails the test."""
    try:
        return framing.parse_first(frame)
    except framing.ProtocolError as e:
        assert str(e), "a ProtocolError must say what is wrong"
        return e


@FUZZ
@given(header=header_text())
def test_every_message_type_decodes_to_its_declared_types_or_is_refused(header):
    got = decode_frame(first_frame(header))
    if isinstance(got, framing.ProtocolError):
        if isinstance(got, framing.InvalidMessage):  # answered, the connection kept: its header a dict
            assert isinstance(got.header, dict)
        return
    h, _ = got
    hints = FIELDS.get(h["type"])
    if hints is None:  # an unknown type: passed on for the receiver's dispatch to refuse
        return
    for name, value in h.items():
        assert name in hints, f"{h['type']!r}: field {name!r} is not declared"
        assert conforms(value, hints[name]), f"{h['type']!r}: {name}={value!r:.80} is not {hints[name]}"
    assert _depth(h) <= schema.MAX_DEPTH + 1, "a header nested deeper than the protocol allows got through"
    schema.encode_header(h)  # a relay can send on what it decoded


@FUZZ
@given(frame=broken_frame())
def test_a_broken_frame_is_a_protocol_error_naming_the_cause(frame):
    got = decode_frame(frame)
    if not isinstance(got, framing.ProtocolError):  # some truncations leave a whole, shorter header
        h, inline = got
        assert framing.payload_size(h) == inline.nbytes or h.get("nframes")


@FUZZ
@given(frame=st.binary(max_size=256))
def test_any_bytes_are_a_frame_or_a_protocol_error(frame):
    decode_frame(frame)


@pytest.mark.parametrize("depth", [schema.MAX_DEPTH, 1000, 10_000, 1_000_000])
@pytest.mark.parametrize("where", ["known", "unknown", "wrongly_typed"])
def test_deep_nesting_is_refused_naming_it(depth, where):
    nested = b"[" * depth + b"]" * depth
    header = {"known": b'{"type":"execute","cell":"c","code":"","parent":{"a":' + nested + b"}}",
              "unknown": b'{"type":"no_such_type","x":' + nested + b"}",
              "wrongly_typed": b'{"type":"execute","cell":5,"parent":{"a":' + nested + b"}}"}[where]
    got = decode_frame(first_frame(header))
    assert isinstance(got, framing.ProtocolError), got
    assert "nested" in str(got) or (where == "wrongly_typed" and "$.cell" in str(got)), got


def test_nesting_a_real_message_needs_is_kept():
    nested = b"[" * (schema.MAX_DEPTH - 3) + b"]" * (schema.MAX_DEPTH - 3)
    h, _ = framing.parse_first(first_frame(b'{"type":"display","cell":"c","data":{"application/json":%s}}' % nested))
    assert h["type"] == "display"


@pytest.mark.parametrize("field", ["exec_count", "max_return", "uid"])
def test_a_huge_integer_is_refused_naming_its_field(field):
    got = decode_frame(first_frame(b'{"type":"execute","cell":"c","code":"","%s":%s}' % (field.encode(), b"9" * 30)))
    assert isinstance(got, framing.InvalidMessage) and field in str(got), got
