"""Issue 24, finding 10 (TLS): ``serve --certfile/--keyfile`` serves https:// and wss:// only; the
kernel and the backend's own workers connect with TLS and verify its certificate (a self-signed
one made here, trusted through ``JUPYTER_GPU_CAFILE``); binding off loopback without TLS warns.

Before, there was no TLS at all: tokens, code and values crossed the network in clear, and a
worker could not dial ``wss://``.
"""
from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed, InvalidMessage

from jupyter_gpu._client.connection import BackendClient
from jupyter_gpu._wire import wsclient
from jupyter_gpu.errors import ConnectionLost
from tests.conftest import LiveKernel, make_kernel_env
from tests.e2e.helpers import LOAD
from tests.integration.backend_process import start_backend, stop_backend
from tests.integration.test_backend_robustness import run_cell

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")]
TOKEN = "tls-token"


def self_signed(d, name: str = "backend"):
    """A self-signed certificate for 127.0.0.1 (and its key), as an operator would make one."""
    cert, key = d / f"{name}.pem", d / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def tls_backend(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(d)
    proc, url = start_backend(d, "--token", TOKEN, "--certfile", str(cert), "--keyfile", str(key), "--no-lane")
    yield url, cert, d
    stop_backend(proc)


@pytest.fixture
def trusting(monkeypatch):
    """``trusting(cafile)``: this process trusts ``cafile`` (JUPYTER_GPU_CAFILE) from now on."""
    def trust(cafile):
        monkeypatch.setenv("JUPYTER_GPU_CAFILE", str(cafile))
        wsclient.tls_context.cache_clear()
    yield trust
    wsclient.tls_context.cache_clear()


def test_cells_run_over_tls_with_the_workers_on_wss(tls_backend, trusting):
    url, cert, _ = tls_backend
    assert url.startswith("https://127.0.0.1:"), url
    trusting(cert)
    client = BackendClient(url, TOKEN, "s-tls")
    # a cold cell: its worker dialled the backend back, which speaks only TLS on that port
    events = run_cell(client, "# %%gpu\nprint(6 * 7)", "t1")
    assert events[-1]["status"] == "ok" and events[-1]["cold"] is True, events
    assert [e["text"] for e in events if e["type"] == "stream"] == ["42\n"]
    client.close()
    # the port speaks nothing in clear
    with pytest.raises((ConnectionClosed, InvalidMessage, OSError, EOFError)):
        wsclient.Connection(url.replace("https://", "ws://") + "/ws/session/s-plain", {"Authorization": f"token {TOKEN}"})
    with pytest.raises((urllib.error.URLError, OSError)):
        urllib.request.urlopen(url.replace("https://", "http://") + "/api/health", timeout=10)


def test_a_certificate_not_trusted_is_refused(tls_backend, tmp_path, trusting):
    url, _, _ = tls_backend
    other, _ = self_signed(tmp_path, "other")
    trusting(other)  # trusts some other certificate, not the backend's
    with pytest.raises(ConnectionLost, match="CERTIFICATE_VERIFY_FAILED"):
        BackendClient(url, TOKEN, "s-mitm")
    ctx = ssl.create_default_context(cafile=str(other))
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/api/health", timeout=10, context=ctx)


def test_a_kernel_uses_an_https_backend(tls_backend, tmp_path):
    url, cert, _ = tls_backend
    d = tmp_path / "rt"
    d.mkdir()
    env = {**make_kernel_env(d), "JUPYTER_GPU_URL": url, "JUPYTER_GPU_TOKEN": TOKEN, "JUPYTER_GPU_CAFILE": str(cert)}
    k = LiveKernel(env)
    try:
        k.run(LOAD)
        cell = k.run("%%gpu\nprint('over tls', 6 * 7)", timeout=120)
        assert "over tls 42" in cell.stdout()
    finally:
        k.shutdown()


def test_binding_off_loopback_without_tls_warns(tmp_path):
    proc, url = start_backend(tmp_path, "--token", TOKEN, "--host", "0.0.0.0")
    try:
        log = (tmp_path / "log").read_text()
        assert "without TLS" in log and "--certfile" in log, log
        info = json.loads((tmp_path / "backend.json").read_text())
        assert info["url"].startswith("http://")
    finally:
        stop_backend(proc)
