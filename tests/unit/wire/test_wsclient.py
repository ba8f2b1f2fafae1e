"""wsclient.Connection's own frame parser (issue 21), against a real socket: a server thread does the
handshake with websockets' sans-I/O server protocol, then writes frames byte for byte as the test
says - data frames of every length encoding, frames split across reads (``pump`` reads what is
there without waiting), a frame that came with the handshake's response, a ping in between (the
pong comes back), a close (the close handshake), an EOF in the middle of a large frame - and
``recv(into=...)`` / ``framing.Assembly(into=True)`` putting large frames straight in place."""
from __future__ import annotations

import os
import socket
import tempfile
import threading

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Frame, Opcode
from websockets.server import ServerProtocol

from jupyter_gpu._wire import framing, wsclient
from jupyter_gpu._wire.wsclient import BIG_FRAME


def frame(opcode, data: bytes, fin: bool = True, mask: bool = False) -> bytes:
    return Frame(opcode, data, fin=fin).serialize(mask=mask)


def binary(data: bytes) -> bytes:
    return frame(Opcode.BINARY, data)


def payload(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed + n).integers(0, 256, n, dtype=np.uint8).tobytes()


class Server:
    """One accepted connection on a unix socket: the handshake done by ``ServerProtocol``, then
    raw bytes as the test writes them (``write``), and what the client sends parsed (``events``)."""

    def __init__(self, path: str, listener: socket.socket, after_handshake: bytes = b""):
        self.sock, _ = listener.accept()
        self.proto = ServerProtocol()
        self.request = None
        while self.request is None:  # until the request is whole
            data = self.sock.recv(65536)
            assert data, "the client hung up during the handshake"
            self.proto.receive_data(data)
            self.request = next(iter(self.proto.events_received()), None)
        self.proto.send_response(self.proto.accept(self.request))
        self.sock.sendall(b"".join(self.proto.data_to_send()) + after_handshake)

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def write_later(self, data: bytes) -> threading.Thread:
        """Write from a thread: more than the socket's buffer holds, while the client reads."""
        t = threading.Thread(target=self.sock.sendall, args=(data,), daemon=True)
        t.start()
        return t

    def events(self) -> list:
        """What the client sent next (blocks until something comes)."""
        while True:
            data = self.sock.recv(65536)
            if not data:
                self.proto.receive_eof()
            else:
                self.proto.receive_data(data)
            events = self.proto.events_received()
            if events or not data:
                return events


@pytest.fixture
def pair():
    """connect(after_handshake=b"") -> (client Connection, Server)."""
    made = []
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "ws.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)

        def connect(after_handshake: bytes = b""):
            box = {}
            t = threading.Thread(target=lambda: box.setdefault("s", Server(path, listener, after_handshake)))
            t.start()
            conn = wsclient.Connection("ws://backend/ws", {"X-Test": "1"}, unix_socket=path)
            t.join()
            made.append((conn, box["s"]))
            return conn, box["s"]

        yield connect
        for conn, server in made:
            conn.sock.close()
            server.sock.close()
        listener.close()


SIZES = [0, 1, 125, 126, 1000, 65535, 65536, BIG_FRAME - 1, BIG_FRAME, BIG_FRAME + 1, 1 << 20, 4 << 20, (5 << 20) + 3]


def test_data_frames_of_every_length_encoding_in_order(pair):
    conn, server = pair()
    datas = [payload(n) for n in SIZES]
    t = server.write_later(b"".join(binary(d) for d in datas))
    for d in datas:
        got = conn.recv(timeout=30)
        assert bytes(got) == d
        assert isinstance(got, bytearray if len(d) >= BIG_FRAME else bytes)
    t.join()
    assert not conn.buffered()


def test_frames_split_at_every_point_of_small_and_large_frames(pair):
    conn, server = pair()
    for n in (5, 300, 70000, BIG_FRAME + 10):
        data = payload(n)
        raw = binary(data)
        cuts = sorted({1, 2, 3, 4, 9, 10, 11, len(raw) // 2, len(raw) - 1} & set(range(1, len(raw))))
        for cut in cuts:
            server.write(raw[:cut])
            conn.pump()  # reads the piece that is there: a partial header, or a partial payload
            assert not conn.buffered()
            server.write(raw[cut:])
            assert bytes(conn.recv(timeout=10)) == data


def test_a_frame_that_came_with_the_handshake_response(pair):
    first = payload(BIG_FRAME * 2)
    conn, server = pair(after_handshake=binary(b"hello") + binary(first)[:1000])
    assert conn.recv(timeout=10) == b"hello"
    server.write(binary(first)[1000:])
    assert bytes(conn.recv(timeout=10)) == first


def test_a_ping_between_data_frames_is_answered_and_order_kept(pair):
    conn, server = pair()
    big = payload(3 * BIG_FRAME)
    server.write(binary(b"one") + frame(Opcode.PING, b"p1") + binary(big)[:5000])
    assert conn.recv(timeout=10) == b"one"
    pong = server.events()
    assert [(e.opcode, e.data) for e in pong] == [(Opcode.PONG, b"p1")]
    t = server.write_later(binary(big)[5000:] + frame(Opcode.PING, b"p2") + binary(b"two"))
    assert bytes(conn.recv(timeout=10)) == big
    assert conn.recv(timeout=10) == b"two"
    t.join()
    assert [(e.opcode, e.data) for e in server.events()] == [(Opcode.PONG, b"p2")]


def test_text_and_fragmented_messages_still_go_through_the_protocol(pair):
    conn, server = pair()
    big = payload(BIG_FRAME * 2)
    server.write_later(frame(Opcode.TEXT, "héllo".encode()) + frame(Opcode.BINARY, b"ab", fin=False)
                       + frame(Opcode.CONT, b"cd") + binary(big))
    assert conn.recv(timeout=10) == "héllo"
    assert conn.recv(timeout=10) == b"abcd"
    assert bytes(conn.recv(timeout=10)) == big


def test_a_close_after_data_delivers_the_data_then_closes_cleanly(pair):
    conn, server = pair()
    server.write(binary(b"last") + frame(Opcode.CLOSE, Close(1000, "bye").serialize()))
    assert conn.recv(timeout=10) == b"last"  # the close came with it: the client answered it
    reply = server.events()
    assert [e.opcode for e in reply] == [Opcode.CLOSE] and Close.parse(reply[0].data).code == 1000
    server.sock.close()
    with pytest.raises(ConnectionClosed) as e:
        conn.recv(timeout=10)
    assert e.value.rcvd.code == 1000 and not conn.open


def test_eof_in_the_middle_of_a_large_frame_is_an_abnormal_close(pair):
    conn, server = pair()
    server.write(binary(payload(BIG_FRAME * 2))[:BIG_FRAME])
    conn.pump()
    server.sock.shutdown(socket.SHUT_WR)
    with pytest.raises(ConnectionClosed) as e:
        conn.recv(timeout=10)
    assert e.value.rcvd is None  # no close frame: a dropped connection (what a worker resumes)


def test_a_masked_frame_from_the_server_fails_the_connection(pair):
    conn, server = pair()
    server.write(frame(Opcode.BINARY, payload(BIG_FRAME), mask=True) + binary(b"never"))
    conn.pump()
    assert not conn.open and not conn.buffered()  # failed (1002): what followed is not taken
    server.sock.close()
    with pytest.raises(ConnectionClosed):
        conn.recv(timeout=10)


def test_recv_into_puts_a_large_frame_in_the_callers_place(pair):
    conn, server = pair()
    data = payload(4 << 20)
    place = bytearray(len(data) + 10)
    offers = []

    def into(n):
        offers.append(n)
        return memoryview(place)[10:10 + n]

    t = server.write_later(binary(data) + binary(data[:BIG_FRAME]) + binary(b"tiny"))
    got = conn.recv(timeout=10, into=into)
    assert isinstance(got, memoryview) and got.obj is place and bytes(place[10:]) == data
    declined = conn.recv(timeout=10, into=lambda n: None)
    assert isinstance(declined, bytearray) and bytes(declined) == data[:BIG_FRAME]
    assert conn.recv(timeout=10, into=into) == b"tiny"  # a small frame is never offered
    assert offers == [len(data)]
    t.join()


@pytest.mark.parametrize("window", [None, 2])
def test_assembly_receives_frames_straight_into_its_buffers(pair, window):
    conn, server = pair()
    bufs = [payload(n) for n in (3, framing.CHUNK * 2 + 5, BIG_FRAME + 1, framing.CHUNK, 7)]
    frames = framing.encode({"type": "execute", "cell": "c"}, bufs)
    t = server.write_later(b"".join(binary(bytes(f)) for f in frames) + binary(b"after"))
    header, inline = framing.parse_first(conn.recv(timeout=10))
    asm = framing.Assembly(header, conn.recv, window=window, into=True)
    got = asm.fill()
    assert [bytes(b) for b in got] == bufs
    assert conn.recv(timeout=10) == b"after"
    t.join()


def test_assembly_refuses_a_frame_that_overruns_its_buffer(pair):
    conn, server = pair()
    header = {"type": "execute", "buffers": [BIG_FRAME], "nframes": 1}
    t = server.write_later(binary(payload(BIG_FRAME + 1)))
    with pytest.raises(framing.ProtocolError):
        framing.Assembly(header, conn.recv, into=True).fill()
    t.join()
