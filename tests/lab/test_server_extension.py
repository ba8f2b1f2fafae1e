"""The server extension behind the lab sidebar, against a real Jupyter server and a real backend.

Every route the extension adds must sit under the server's base_url and refuse a request without
Jupyter's token (403); the state route must show a notebook's own worker, queue and cost only.
"""
from __future__ import annotations

import re
import time

import pytest

from jupyter_gpu.labserver import handlers
from tests.conftest import _reap_backend as reap_backend, make_kernel_env
from tests.lab.server import jupyter

BASE = "/user/alice/"  # a JupyterHub-style base_url
METHODS = ("get", "post", "put", "patch", "delete")


def concrete(pattern: str) -> list[str]:
    """Request paths for a route pattern: each regex group filled with every value it serves."""
    if "(" not in pattern:
        return [pattern]
    return [re.sub(r"\([^)]*\)", name, pattern) for name in handlers.PROXIED]


@pytest.fixture
def env(tmp_path):
    d = tmp_path / "gpu-runtime"
    d.mkdir()
    yield make_kernel_env(d)
    reap_backend(d)


def test_every_route_is_authenticated_and_under_base_url(tmp_path, env):
    routes = handlers.routes(BASE)
    assert routes, "the extension registers no routes"
    with jupyter(tmp_path, env, base_url=BASE) as server:
        checked = 0
        for pattern, cls in routes:
            assert pattern.startswith(BASE + "jupyter-gpu/"), pattern
            methods = [m for m in METHODS if getattr(cls, m) is not getattr(handlers.APIHandler, m)]
            assert methods, f"{cls.__name__} handles nothing"
            for m in methods:
                # tornado.web.authenticated wraps the method (functools.wraps keeps __wrapped__)
                assert hasattr(getattr(cls, m), "__wrapped__"), f"{cls.__name__}.{m} is not @authenticated"
            for path in concrete(pattern):
                rel = path[len(BASE):]
                for m in methods:
                    status, _ = server.request(m.upper(), rel) if m != "get" else server.get(rel)
                    assert status not in (401, 403, 404), f"{m.upper()} {path} with the token: {status}"
                    status, _ = (server.get(rel, token=False) if m == "get" else
                                 _no_token(server, m.upper(), rel))
                    assert status == 403, f"{m.upper()} {path} without a token answered {status}, not 403"
                    checked += 1
        assert checked >= len(routes)
        # nothing of it outside the base_url
        assert server.get("../../jupyter-gpu/state")[0] == 404


def _no_token(server, method, rel):
    import urllib.error
    import urllib.request

    req = urllib.request.Request(server.url + rel, data=b"{}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, None
    except urllib.error.HTTPError as e:
        return e.code, None


def test_state_without_a_backend_shows_the_catalog(tmp_path, env):
    with jupyter(tmp_path, env, base_url=BASE) as server:
        status, state = server.get("jupyter-gpu/state?kernel=0123456789")
        assert status == 200
        assert state["backend"]["source"] == "none"  # never started by the sidebar's poll
        rows = {r["gpu"]: r for r in state["catalog"]}
        assert rows["H100"]["serverless_per_h"] > 0 and rows["H100"]["dedicated_per_h"] > 0
        assert state["workers"] == [] and state["cost"]["cells"] == 0
        assert server.get("jupyter-gpu/api/status")[0] == 503
        # a request cannot name another backend (tests/security/test_lab_server_auth.py)
        from tests.lab.server import free_port

        gone = f"http://127.0.0.1:{free_port()}"
        status, state = server.get("jupyter-gpu/state?kernel=0123456789",
                                   headers={"X-Jupyter-Gpu-Url": gone, "X-Jupyter-Gpu-Token": "t"})
        assert status == 200 and state["backend"]["source"] == "none"
    # the server's configured backend (JUPYTER_GPU_URL) replaces discovery; unreachable: said so
    with jupyter(tmp_path / "configured", {**env, "JUPYTER_GPU_URL": gone, "JUPYTER_GPU_TOKEN": "t"},
                 base_url=BASE) as server:
        status, state = server.get("jupyter-gpu/state?kernel=0123456789")
        assert status == 200 and state["backend"]["source"] == "configured"
        assert "cannot reach the backend" in state["backend"]["error"], state["backend"]
        status, body = server.get("jupyter-gpu/api/health")
        assert status == 502 and "cannot reach" in body["error"]


def _kernel(server, path="nb.ipynb"):
    from jupyter_client import BlockingKernelClient

    status, k = server.request("POST", "api/kernels", {"name": "python3", "path": path})
    assert status == 201, k
    kc = BlockingKernelClient(connection_file=str(server.runtime_dir / f"kernel-{k['id']}.json"))
    kc.load_connection_file()
    kc.start_channels(hb=False)  # the server watches the kernel; a client heartbeat races wait_for_ready
    kc.wait_for_ready(timeout=60)
    return k["id"], kc


def _run(kc, code, timeout=120):
    out = []
    reply = kc.execute_interactive(code, timeout=timeout, output_hook=out.append)
    assert reply["content"]["status"] == "ok", (reply["content"], out)
    return out


def _wait(server, kernel, cond, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        status, state = server.get(f"jupyter-gpu/state?kernel={kernel}")
        assert status == 200, state
        if cond(state):
            return state
        assert time.monotonic() < deadline, f"condition not met within {timeout} s; last state: {state}"
        time.sleep(0.1)  # polling the REST route the sidebar polls, with a deadline


def test_state_shows_the_notebooks_worker_queue_and_cost(tmp_path, env):
    env = {**env, "JUPYTER_GPU_MAX_WORKERS": "1"}  # a second notebook's cold start must queue
    with jupyter(tmp_path, env, base_url=BASE) as server:
        a, kca = _kernel(server, "a.ipynb")
        b, kcb = _kernel(server, "b.ipynb")
        try:
            _run(kca, "%load_ext jupyter_gpu\n%gpu config --gpu cpu --keep-warm 5m")
            _run(kca, "%%gpu\nx = 21 * 2\nprint(x)")
            state = _wait(server, a, lambda s: s["workers"] and s["cost"]["cells"] == 1)
            assert state["backend"]["source"] == "embedded" and "cpu" in state["backend"]["offers"]
            [w] = state["workers"]
            assert w["gpu"] == "cpu" and w["state"] == "idle" and 0 < w["keep_warm_left"] <= 300
            assert state["cost"]["gpu_seconds"] > 0 and state["cost"]["running"] == 0
            # the cpu device at its CPU list price, sized by this machine's cores (a local worker's)
            assert any(r["gpu"] == "cpu" and r["serverless_per_h"] > 0 and r["dedicated_per_h"] > 0
                       and "CPU list price" in r["basis"] for r in state["catalog"])
            assert state["cost"]["usd"] > 0 and state["cost"]["dedicated_usd"] > 0
            assert server.get("jupyter-gpu/api/health")[1]["ok"] is True

            # notebook b: its own (empty) view, then its cell waits behind a's warm worker
            other = server.get(f"jupyter-gpu/state?kernel={b}")[1]
            assert other["workers"] == [] and other["cost"]["cells"] == 0
            _run(kcb, "%load_ext jupyter_gpu")
            msg = kcb.execute("%%gpu --gpu cpu\nprint('never')")
            state = _wait(server, b, lambda s: s["queued"])
            assert state["queued"][0]["position"] == 1 and state["queued"][0]["gpu"] == "cpu"
            assert _wait(server, a, lambda s: True)["queued"] == []  # not a's
            assert server.request("POST", f"api/kernels/{b}/interrupt")[0] == 204
            reply = kcb.get_shell_msg(timeout=60)
            while reply["parent_header"].get("msg_id") != msg:
                reply = kcb.get_shell_msg(timeout=60)
            assert reply["content"]["status"] == "error"
            _wait(server, b, lambda s: not s["queued"])
        finally:
            kca.stop_channels()
            kcb.stop_channels()


def test_a_notebooks_spawned_calls_are_in_its_cost(tmp_path, env):
    with jupyter(tmp_path, env, base_url=BASE) as server:
        a, kca = _kernel(server, "a.ipynb")
        b, kcb = _kernel(server, "b.ipynb")
        try:
            _run(kca, "%load_ext jupyter_gpu\nimport jupyter_gpu\n"
                      "@jupyter_gpu.function(gpu='cpu')\ndef triple(x):\n    return 3 * x\n"
                      "print(triple.spawn(2).get())")
            # the call ran in a session of the backend's own, yet it is this notebook's cost
            state = _wait(server, a, lambda s: s["cost"]["cells"] == 1)
            assert state["cost"]["usd"] > 0
            assert server.get(f"jupyter-gpu/state?kernel={b}")[1]["cost"]["cells"] == 0  # not b's
        finally:
            kca.stop_channels()
            kcb.stop_channels()
