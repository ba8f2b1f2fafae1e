"""A dropped connection between kernel and backend loses nothing (issue 25): the backend keeps the
events a kernel has not acknowledged, the kernel opens the connection again and resumes after the
last event it took (_client/connection.py; api/kernels.py), and the cell shows every line once,
in order.

A TCP proxy between a real kernel and a real backend cuts the connection (a reset, no close)
at random points of a cell that prints 10,000 lines.  Warm cells would go by the worker's direct
lane, past the proxy: the backend serves without lanes here."""
from __future__ import annotations

import random
import socket
import struct
import threading

import pytest

from tests.conftest import LiveKernel, make_kernel_env
from tests.integration.backend_process import start_backend, stop_backend

from .helpers import LOAD

pytestmark = pytest.mark.timeout(300)
TOKEN = "resume-token"
LINES, CUTS = 10_000, 100
# ~10 s of output: a pause every 50 lines, so the cuts fall all along the stream
STREAM = f"%%gpu\nimport time\nfor i in range({LINES}):\n    print(i)\n    if i % 50 == 49:\n        time.sleep(0.05)"


class CuttingProxy:
    """Forwards 127.0.0.1:port to the backend; ``cut()`` resets the connections it carries."""

    def __init__(self, target: tuple):
        self.target = target
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.pairs: list = []
        self.lock = threading.Lock()
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.pairs.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass

    def cut(self) -> bool:
        """Reset every connection carried now (SO_LINGER 0: an RST, no close frame); False: none."""
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            for s in pair:
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
        if pairs:
            self.cuts += 1
        return bool(pairs)

    def close(self) -> None:
        self.listener.close()
        self.cut()


def stream_while_cutting(k, proxy: CuttingProxy, cuts: int, rng: random.Random, pause: tuple):
    """Run STREAM in kernel ``k`` while ``proxy`` cuts its connections, a random ``pause`` apart,
    ``cuts`` times; the cell, ended ok, with every cut fallen within it."""
    done = threading.Event()
    cell = k.submit(STREAM)

    def cutter():
        while proxy.cuts < cuts and not done.wait(rng.uniform(*pause)):
            proxy.cut()

    t = threading.Thread(target=cutter, daemon=True)
    t.start()
    assert k.wait_until(lambda: cell.done, 240), "the cell did not end"
    done.set()
    t.join(10)
    assert proxy.cuts >= cuts, f"only {proxy.cuts} cuts fell within the stream"
    assert cell.reply["content"]["status"] == "ok", cell.reply["content"]
    return cell


def test_a_stream_survives_a_hundred_dropped_connections_without_a_gap_or_a_duplicate(tmp_path):
    proc, url = start_backend(tmp_path, "--token", TOKEN, "--no-lane")
    host, port = url.rsplit("/", 1)[-1].split(":")
    proxy = CuttingProxy((host, int(port)))
    env = make_kernel_env(tmp_path / "kernel")
    env.update(JUPYTER_GPU_URL=f"http://127.0.0.1:{proxy.port}", JUPYTER_GPU_TOKEN=TOKEN)
    k = LiveKernel(env)
    try:
        k.run(LOAD)
        k.run("%%gpu\nx = 1", timeout=120)  # the worker is warm: the stream starts at once
        cell = stream_while_cutting(k, proxy, CUTS, random.Random(25), (0.02, 0.08))
        lines = cell.stdout().splitlines()
        assert lines == [str(i) for i in range(LINES)], (
            f"{len(lines)} lines; first difference at "
            f"{next((i for i, (a, b) in enumerate(zip(lines, map(str, range(LINES)))) if a != b), len(lines))}")
        # and the session goes on: the next cell, through the proxy
        assert k.run("%%gpu\nprint(x + 1)").stdout() == "2\n"
    finally:
        k.shutdown()
        proxy.close()
        stop_backend(proc)


def test_a_workers_dropped_connection_resumes_and_its_cell_carries_on(tmp_path):
    """The worker's connection to the backend is cut (a reset) at random points of the same
    stream: the worker dials again with its resume key and sends what the backend did not take;
    the cell's lines all arrive, once, in order, and the worker - its namespace - stays."""
    proxy = CuttingProxy(None)  # its target: the backend, once it listens
    proc, url = start_backend(tmp_path, "--token", TOKEN, "--no-lane",
                              env={"JUPYTER_GPU_WORKER_URL": f"ws://127.0.0.1:{proxy.port}/ws/worker"})
    host, port = url.rsplit("/", 1)[-1].split(":")
    proxy.target = (host, int(port))
    env = make_kernel_env(tmp_path / "kernel")
    env.update(JUPYTER_GPU_URL=url, JUPYTER_GPU_TOKEN=TOKEN)
    k = LiveKernel(env)
    try:
        k.run(LOAD)
        first = k.run("%%gpu\nkept = 'kept'", timeout=120)
        worker = first.footers()[-1]["worker"]
        cell = stream_while_cutting(k, proxy, 20, random.Random(24), (0.2, 0.4))
        lines = cell.stdout().splitlines()
        assert lines == [str(i) for i in range(LINES)], f"{len(lines)} lines"
        assert cell.footers()[-1]["worker"] == worker  # the same worker, never restarted
        resumed = (tmp_path / "log").read_text().count(f"worker {worker} resumed its connection")
        assert resumed >= 10, f"the worker resumed {resumed} times"  # (a cut between two sends needs none)
        assert k.run("%%gpu\nprint(kept)").stdout() == "kept\n"
    finally:
        k.shutdown()
        proxy.close()
        stop_backend(proc)
