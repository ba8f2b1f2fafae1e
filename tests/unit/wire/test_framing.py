"""Frame encoding/decoding, including every kind of malformed frame."""
import json
import struct

import numpy as np
import pytest

from jupyter_gpu._wire import framing
from jupyter_gpu._wire.framing import CHUNK, INLINE_MAX, ProtocolError


def roundtrip(header, buffers):
    frames = framing.encode(header, buffers)
    it = iter(frames[1:])
    h, inline = framing.parse_first(frames[0])
    got = framing.assemble(h, inline, lambda: next(it))
    assert next(it, None) is None, "every frame must be consumed"
    return h, got, frames


def test_small_message_is_one_frame_with_inline_payload():
    h, got, frames = roundtrip({"type": "execute", "cell": "c1"}, [b"abc", b"", b"de"])
    assert len(frames) == 1
    assert h["type"] == "execute" and h["cell"] == "c1" and h["buffers"] == [3, 0, 2]
    assert [bytes(b) for b in got] == [b"abc", b"", b"de"]
    assert all(isinstance(b, (bytearray, np.ndarray)) for b in got), "buffers must be writable"


def test_large_buffers_are_chunked_and_reassembled_exactly():
    big = np.arange((2 * CHUNK + 123) // 8 + 1, dtype=np.int64)
    small = b"x" * 10
    h, got, frames = roundtrip({"type": "done"}, [memoryview(big), small])
    assert h["nframes"] == 3 + 1 == len(frames) - 1
    assert all(len(f) <= CHUNK for f in frames[1:])
    assert np.array_equal(np.frombuffer(got[0], dtype=np.int64), big)
    assert bytes(got[1]) == small


def test_encode_does_not_change_the_callers_header():
    header = {"type": "stream", "text": "hi"}
    framing.encode(header, [b"x" * (INLINE_MAX + 1)])
    assert header == {"type": "stream", "text": "hi"}


def test_a_header_the_peer_would_refuse_is_refused_before_it_is_sent():
    """Sent, it would make the peer close the connection (a worker lost with its namespace)."""
    with pytest.raises(framing.HeaderTooLarge, match="'stream' message's header is"):
        framing.encode({"type": "stream", "text": "x" * framing.MAX_HEADER})
    frames = framing.encode({"type": "stream", "text": "x" * (framing.MAX_HEADER - 1000)})
    assert framing.parse_first(frames[0])[0]["type"] == "stream"


def test_non_byte_buffers_are_sent_as_bytes():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    _, got, _ = roundtrip({"type": "x"}, [memoryview(arr)])
    assert np.array_equal(np.frombuffer(got[0], dtype=np.float32).reshape(2, 3), arr)


def _frame(header_bytes: bytes, payload=b"", magic=b"JG", version=framing.PROTOCOL_VERSION, hlen=None):
    n = len(header_bytes) if hlen is None else hlen
    return struct.pack("<2sBBI", magic, version, 0, n) + header_bytes + payload


@pytest.mark.parametrize(
    "frame, words",
    [
        ("text frame", "text frame"),
        (b"JG", "shorter than"),
        (_frame(b'{"type":"x"}', magic=b"XX"), "bad magic"),
        (_frame(b'{"type":"x"}', version=99), "version 99"),
        (_frame(b'{"type":"x"}', hlen=10_000), "runs past the end"),
        (_frame(b"{not json"), "not valid JSON"),
        (_frame(b"[1,2]"), "JSON object"),
        (_frame(b'{"type":7}'), "string 'type'"),
        (_frame(b'{"type":"x","buffers":[-1]}'), "non-negative"),
        (_frame(b'{"type":"x","buffers":[5]}', b"abc"), "inline payload is 3 bytes"),
        (_frame(b'{"type":"x","buffers":[5],"nframes":7}'), "need 1"),
        (_frame(b'{"type":"x","nframes":-2}'), "non-negative integer"),
        (_frame(json.dumps({"type": "x", "buffers": [framing.MAX_PAYLOAD + 1], "nframes": 1}).encode()), "exceeds"),
    ],
)
def test_malformed_first_frames_name_the_problem(frame, words):
    with pytest.raises(ProtocolError, match=words):
        framing.parse_first(frame)


def test_a_follow_frame_that_overruns_its_buffer_is_refused():
    h = {"type": "x", "buffers": [CHUNK + 1], "nframes": 2}
    frames = iter([b"a" * CHUNK, b"bb"])
    with pytest.raises(ProtocolError, match="overruns"):
        framing.assemble(h, memoryview(b""), lambda: next(frames))


def test_a_text_frame_in_the_middle_of_a_payload_is_refused():
    h = {"type": "x", "buffers": [CHUNK + 1], "nframes": 2}
    frames = iter(["oops"])
    with pytest.raises(ProtocolError, match="text frame"):
        framing.assemble(h, memoryview(b""), lambda: next(frames))


def test_with_header_restamps_without_touching_the_payload():
    frames = framing.encode({"type": "stream", "text": "a"}, [b"payload"])
    h, inline = framing.parse_first(frames[0])
    h["seq"] = 7
    h2, inline2 = framing.parse_first(framing.with_header(h, inline))
    assert h2["seq"] == 7 and bytes(inline2) == b"payload"
