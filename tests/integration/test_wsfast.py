"""The backend's websocket protocol (api/wsfast.py: large binary frames read into their own buffer and
written without copies) against a real uvicorn server on 127.0.0.1 and real clients: every frame
comes back whole and in order whatever its size and however the reads split it, control frames and
closes still work, and what a client must not send (a frame over the limit, an unmasked frame) closes
that connection with the code the protocol names."""
from __future__ import annotations

import base64
import os
import random
import socket
import struct
import threading

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from jupyter_gpu_backend.api.wsfast import FAST_MIN, FastFrames

pytestmark = pytest.mark.timeout(60)
LIMIT = 1 << 20  # ws_max_size of the server under test


async def echo(ws: WebSocket) -> None:
    await ws.accept()
    try:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("bytes") is not None:
                await ws.send_bytes(msg["bytes"])
            else:
                await ws.send_text(msg["text"])
    except WebSocketDisconnect:
        return


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "deflate"])
def server(request):
    """The server; with permessage-deflate offered too (its compressed frames are the parser's)."""
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(Starlette(routes=[WebSocketRoute("/echo", echo)]), ws=FastFrames, ws_max_size=LIMIT,
                            ws_per_message_deflate=request.param,
                            ws_ping_interval=None, lifespan="off", log_level="warning")
    srv = uvicorn.Server(config)
    t = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    assert srv_started(srv, t)
    yield f"ws://127.0.0.1:{sock.getsockname()[1]}/echo"
    srv.should_exit = True
    t.join(10)


def srv_started(srv, t) -> bool:
    done = threading.Event()
    while not srv.started and t.is_alive():
        done.wait(0.01)  # uvicorn sets a flag, no event: bounded by the test's timeout
    return srv.started


def test_frames_of_every_size_come_back_whole_and_in_order(server, request):
    rng = random.Random(7)
    deflate = request.node.callspec.params["server"]
    compressible = b"jupyter-gpu " * 40_000  # (deflated when negotiated: the parser's path)
    sizes = [0, 1, 125, 126, 65535, FAST_MIN - 1, FAST_MIN, FAST_MIN + 1, 300_001]
    sizes += [] if deflate else [LIMIT - 1, LIMIT]  # (random bytes deflated grow past the limit)
    with connect(server, max_size=None) as ws:
        for n in sizes:
            data = rng.randbytes(n)
            ws.send(data)
            assert ws.recv() == data, n
            ws.send(f"text after {n}")  # a text frame between, through websockets' parser
            assert ws.recv() == f"text after {n}"
            assert ws.ping(b"p").wait(10)  # a control frame between: answered
        ws.send(compressible)
        assert ws.recv() == compressible


def test_frames_sent_back_to_back_split_across_reads_come_back_in_order(server):
    rng = random.Random(11)
    # headers and payloads fall anywhere in the server's reads: small and large frames mixed
    msgs = [rng.randbytes(rng.choice([3, 200, 70_000, 150_001, 600_000])) for _ in range(60)]
    with connect(server, max_size=None) as ws:
        sender = threading.Thread(target=lambda: [ws.send(m) for m in msgs])
        sender.start()
        got = [ws.recv(timeout=30) for _ in msgs]
        sender.join()
    assert got == msgs


def test_a_frame_over_the_limit_closes_the_connection_with_1009(server):
    with connect(server, max_size=None) as ws:
        ws.send(os.urandom(LIMIT + 1))
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=30)
        assert e.value.rcvd is not None and e.value.rcvd.code == 1009


def test_the_client_closes_and_the_close_handshake_completes(server):
    with connect(server, max_size=None) as ws:
        ws.send(os.urandom(FAST_MIN * 2))
        ws.recv()
        ws.close(code=1000)
        assert ws.close_code == 1000  # the server answered the close


def _raw_upgrade(url: str) -> socket.socket:
    host, port = url.split("//")[1].split("/")[0].split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /echo HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def _read_close_code(s: socket.socket) -> int:
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError(f"no close frame; got {data[:40]!r}")
        data += chunk
        if len(data) >= 4 and data[0] == 0x88:
            return struct.unpack("!H", data[2:4])[0]


def test_an_unmasked_client_frame_closes_the_connection_with_1002(server):
    s = _raw_upgrade(server)
    n = FAST_MIN * 2  # a size the fast path would take, were it masked
    s.sendall(bytes((0x82, 127)) + struct.pack("!Q", n) + os.urandom(n))
    assert _read_close_code(s) == 1002
    s.close()


def test_a_masked_frame_from_a_raw_client_is_unmasked(server):
    s = _raw_upgrade(server)
    data, mask = os.urandom(FAST_MIN + 5), os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    frame = bytes((0x82, 0x80 | 127)) + struct.pack("!Q", len(data)) + mask + masked
    for i in range(0, len(frame), 7):  # dribbled: the header itself split across reads
        s.sendall(frame[i:i + 7])
    got = b""
    want = 2 + 8 + len(data)
    while len(got) < want:
        got += s.recv(65536)
    assert got[:2] == bytes((0x82, 127)) and struct.unpack("!Q", got[2:10])[0] == len(data) and got[10:] == data
    s.close()
