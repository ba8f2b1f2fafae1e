"""TCP keepalive, set on the backend's listening socket and on every websocket client's socket.

Its own module so that the backend sets it without importing the websocket client (which imports
websockets: ~50 ms before the backend could spawn its first worker, issue 19).
"""
from __future__ import annotations

import socket


def keepalive(sock: socket.socket) -> None:
    """Dead peers are found by TCP keepalive (after ~2 min), not by websocket pings."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 15), ("TCP_KEEPCNT", 4)):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
