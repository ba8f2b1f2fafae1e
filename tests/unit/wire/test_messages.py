"""Typed messages: every type defined once, validated where it is decoded, and documented."""
from __future__ import annotations

import ast
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_gpu._wire import framing, messages

ROOT = Path(__file__).resolve().parents[3]


def frame_of(header_json: bytes) -> bytes:
    return struct.pack("<2sBBI", b"JG", framing.PROTOCOL_VERSION, 0, len(header_json)) + header_json


def test_every_message_type_is_documented_in_protocol_md():
    text = (ROOT / "docs" / "protocol.md").read_text()
    rows = {line.split("|")[1].strip().strip("`") for line in text.splitlines() if line.startswith("| `")}
    missing = sorted(set(messages.TYPES) - rows)
    assert not missing, f"docs/protocol.md's table lacks {missing}"
    unknown = sorted(rows - set(messages.TYPES))
    assert not unknown, f"docs/protocol.md documents types messages.py does not define: {unknown}"


@pytest.mark.parametrize("header, field", [
    (b'{"type":"execute","cell":"c","code":"x","keep_warm":"300"}', "$.keep_warm"),  # a string keep_warm
    (b'{"type":"execute","cell":"c","code":"x","inputs":[["a",1]]}', "$.inputs"),  # a list where a dict belongs
    (b'{"type":"execute","cell":"c","code":"x","exec_count":1.5}', "$.exec_count"),
    (b'{"type":"execute","cell":"c","code":"x","keep_warm":-1}', "$.keep_warm"),
    (b'{"type":"done","cell":"c","status":"ok","timings":{"run":"fast"}}', "$.timings"),
    (b'{"type":"done","cell":"c","status":"finished"}', "$.status"),
    (b'{"type":"stream","cell":"c","name":"stdout","text":7}', "$.text"),
    (b'{"type":"interrupt","cell":["c"]}', "$.cell"),
    (b'{"type":"input_reply","cell":"c","error":"oops"}', "$.error"),
])
def test_a_wrongly_typed_field_is_refused_naming_it(header, field):
    with pytest.raises(framing.InvalidMessage, match=field.replace("$", r"\$")) as e:
        framing.parse_first(frame_of(header))
    assert e.value.header["type"] == header.split(b'"')[3].decode()  # what it was, to answer it


@pytest.mark.parametrize("number, words", [(b"NaN", "not valid JSON"), (b"1e999", "out of range")])
def test_a_number_no_float_holds_is_malformed(number, words):
    """Python's json module reads `NaN` and `1e999` (as inf); a header holding either is refused."""
    with pytest.raises(framing.ProtocolError, match=words):
        framing.parse_first(frame_of(b'{"type":"execute","cell":"c","code":"x","keep_warm":' + number + b"}"))


def test_an_invalid_message_whose_frames_are_broken_is_a_framing_error():
    """Its follow-on frames could not be skipped: the connection cannot go on."""
    with pytest.raises(framing.ProtocolError, match="need 1") as e:
        framing.parse_first(frame_of(b'{"type":"execute","cell":5,"buffers":[5],"nframes":7}'))
    assert not isinstance(e.value, framing.InvalidMessage)


def test_valid_messages_come_back_as_the_dicts_that_were_sent():
    sent = messages.done("c1", "ok", {"exec": 0.5}, values={"x": {"h": "ab", "t": "int", "p": {"w": 0}, "b": []}},
                         refs={"m": {"h": "ref:c1:m", "t": "Model", "why": "kept"}}, deleted=["y"])
    header, _ = framing.parse_first(framing.encode(sent, [b"pickle"])[0])
    assert header == {**sent, "buffers": [6]}
    assert "worker" not in header  # an absent field stays absent


def test_the_type_need_not_come_first():
    """Headers written by others (not encode) are decoded the slow way, with the same result."""
    header, _ = framing.parse_first(frame_of(b'{"cell":"c","type":"stream","name":"stderr","text":"x"}'))
    assert header == {"type": "stream", "cell": "c", "name": "stderr", "text": "x"}
    with pytest.raises(framing.InvalidMessage, match="names its type twice"):
        framing.parse_first(frame_of(b'{"type":"stream","text":"x","type":"done"}'))


def test_a_type_the_decoder_does_not_know_passes_for_the_receiver_to_refuse():
    header, _ = framing.parse_first(frame_of(b'{"type":"teleport","to":"mars"}'))
    assert header == {"type": "teleport", "to": "mars"}


@pytest.mark.parametrize("strict", ["0", "1"])
def test_an_unknown_field_is_dropped_or_in_strict_mode_refused(strict):
    code = ("from jupyter_gpu._wire import framing\n"
            "f = framing.encode({'type': 'stream', 'cell': 'c', 'name': 'stdout', 'text': 'x', 'colour': 'red'})\n"
            "try:\n    print(sorted(framing.parse_first(f[0])[0]))\n"
            "except framing.InvalidMessage as e:\n    print('refused:', e)\n")
    env = {**os.environ, "JUPYTER_GPU_STRICT_WIRE": strict}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    if strict == "1":
        assert out.startswith("refused:") and "['colour']" in out
    else:
        assert out.strip() == "['cell', 'name', 'text', 'type']"


def test_placed_adds_only_where_a_cell_ran():
    done = messages.done("c1", "ok")
    messages.placed(done, worker="w-1", gpu="cpu", cold=False)
    assert done["worker"] == "w-1" and done["cold"] is False
    with pytest.raises(TypeError, match="not where a cell ran"):
        messages.placed(done, status="error")


def _builds_done(node) -> bool:
    """A dict literal whose "type" is the done type: a `done` built by hand."""
    if not isinstance(node, ast.Dict):
        return False
    for k, v in zip(node.keys, node.values):
        if isinstance(k, ast.Constant) and k.value == "type":
            return (isinstance(v, ast.Constant) and v.value == "done") or (
                isinstance(v, ast.Attribute) and v.attr == "DONE")
    return False


def test_done_is_built_only_by_its_constructor():
    """The final event is made by ``messages.done`` (and placed by ``messages.placed``) everywhere."""
    found = []
    for folder in ("jupyter_gpu", "backend", "worker_image"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "messages.py" and path.parent.name == "_wire":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if _builds_done(node):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, f"`done` built by hand (use messages.done): {found}"
