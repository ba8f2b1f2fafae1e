"""The lane's framing and its door: a real Unix socket, a listener and clients in threads."""
from __future__ import annotations

import socket
import struct
import threading

import numpy as np
import pytest

from jupyter_gpu._wire import lane, framing


@pytest.fixture
def listener(tmp_path):
    li = lane.Listener(str(tmp_path), "w-test")
    yield li
    li.close()


def _serve(listener, session, results):
    def run():
        results.append(listener.accept(session))
    t = threading.Thread(target=run)
    t.start()
    return t


def test_the_socket_is_the_owners_alone(listener, tmp_path):
    assert (tmp_path / "w-test.sock").stat().st_mode & 0o077 == 0


def test_a_kernel_with_the_secret_gets_a_lane_and_messages_cross_whole(listener):
    got = []
    t = _serve(listener, "s-1", got)
    client = lane.connect(listener.path, listener.secret, "s-1")
    t.join(5)
    server = got[0]
    assert server is not None
    big = np.arange(3 * 1024 * 1024, dtype=np.float64)  # 24 MiB: several 4 MiB frames
    sender = threading.Thread(target=client.send, args=({"type": "execute", "cell": "c"}, [big.data]))
    sender.start()  # a socket buffer holds far less than 24 MiB: the receiver must read meanwhile
    msg = server.recv(5)
    sender.join(5)
    assert msg.type == "execute" and np.array_equal(np.frombuffer(msg.buffers[0], dtype=np.float64), big)
    server.send({"type": "done", "cell": "c"})
    assert client.recv(5).header == {"type": "done", "cell": "c"}
    assert client.recv(0.05) is None  # nothing else waits
    server.close()
    with pytest.raises(lane.LaneClosed):
        client.recv(5)


@pytest.mark.parametrize("secret,session,why", [
    ("wrong", "s-1", "wrong lane secret"),
    (None, "s-other", "serves another session"),
])
def test_a_wrong_secret_or_another_session_is_refused_and_the_door_stays_open(listener, secret, session, why):
    got = []
    t = _serve(listener, "s-1", got)
    with pytest.raises(lane.LaneClosed, match=why):
        lane.connect(listener.path, secret or listener.secret, session)
    t.join(5)
    assert got == [None]
    t = _serve(listener, "s-1", got)  # the right kernel still gets in
    assert lane.connect(listener.path, listener.secret, "s-1") is not None
    t.join(5)
    assert got[-1] is not None


def test_an_oversized_length_is_a_protocol_error_not_an_allocation(listener):
    got = []
    t = _serve(listener, "s-1", got)
    client = lane.connect(listener.path, listener.secret, "s-1")
    t.join(5)
    client.sock.sendall(struct.pack("<Q", 1 << 50))
    with pytest.raises(framing.ProtocolError, match="larger than any frame"):
        got[0].recv(5)


def test_a_client_that_says_nothing_is_dropped(listener):
    got = []
    t = _serve(listener, "s-1", got)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(listener.path)
    t.join(5)  # accept() gives up after its hello timeout
    assert got == [None]
    s.close()


def _pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return lane.LaneConnection(a), lane.LaneConnection(b)


def test_recv_ready_takes_a_message_only_when_all_of_it_is_there():
    """What a short cell sent on arrival relies on: its whole answer is taken without waiting;
    anything not all there (a frame still arriving, a payload in follow-on frames) is left whole
    for recv, which waits for it."""
    kernel, worker = _pair()
    assert kernel.recv_ready() is None  # nothing yet: it does not wait

    worker.send({"type": "done", "cell": "c1"}, [b"\x80\x04K\x01."])
    msg = kernel.recv_ready()
    assert msg.header["cell"] == "c1" and bytes(msg.buffers[0]) == b"\x80\x04K\x01."

    frame = framing.encode({"type": "stream", "cell": "c2", "name": "stdout", "text": "hi\n"})[0]
    wire = struct.pack("<Q", len(frame)) + frame
    worker.sock.sendall(wire[:len(wire) // 2])  # half a frame
    assert kernel.recv_ready() is None
    worker.sock.sendall(wire[len(wire) // 2:])
    assert kernel.recv(5).header["text"] == "hi\n"  # nothing of it was lost

    big = np.arange(framing.INLINE_MAX, dtype=np.uint8)  # over the inline limit: follow-on frames
    sender = threading.Thread(target=worker.send, args=({"type": "done", "cell": "c3"}, [big.data]))
    sender.start()
    assert kernel.readable(5)  # its first frame (the header alone) is written whole, in one go
    assert kernel.recv_ready() is None
    msg = kernel.recv(5)
    sender.join(5)
    assert msg.header["cell"] == "c3" and np.array_equal(np.frombuffer(msg.buffers[0], dtype=np.uint8), big)

    worker.close()
    with pytest.raises(lane.LaneClosed):
        kernel.recv_ready()
