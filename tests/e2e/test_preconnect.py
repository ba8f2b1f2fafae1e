"""`%load_ext jupyter_gpu` connects to the backend in the background once its cell has run (issue 19):
the embedded backend's start overlaps the notebook's local cells, and the first `%%gpu` cell uses that
backend, already up.  A backend named in the same cell (`%gpu use URL`, as the sidebar sends it) is the
one used, and no embedded backend is started for nothing."""
from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import LiveKernel
from tests.integration.backend_process import api_get, runtime_info, start_backend, stop_backend

pytestmark = pytest.mark.timeout(180)


def _holds(runtime: Path, sid: str) -> bool:
    """Does the embedded backend named by ``runtime`` (its runtime file) hold session ``sid``?"""
    try:
        info = json.loads(runtime.read_text())
        req = urllib.request.Request(f"{info['url']}/api/status", headers={"Authorization": f"token {info['token']}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return sid in json.load(r)["sessions"]
    except (OSError, ValueError, KeyError):
        return False  # not written yet, or not answering yet


def test_the_backend_is_up_holding_the_session_before_the_first_gpu_cell(fresh_kernel_env):
    runtime = Path(fresh_kernel_env["JUPYTER_GPU_RUNTIME_DIR"]) / "backend.json"
    k = LiveKernel(fresh_kernel_env)
    try:
        load = k.run("%load_ext jupyter_gpu\nfrom jupyter_gpu.notebook import extension\n"
                     "print(extension.magics.session.id)")
        sid = load.stdout().strip()
        # no %%gpu cell yet: the backend starts and the kernel's session opens on their own
        assert k.wait_until(lambda: _holds(runtime, sid), 90), \
            f"no backend held the kernel's session after %load_ext; runtime file: {runtime.exists()}"
        pid = json.loads(runtime.read_text())["pid"]
        # a local cell meanwhile is a local cell
        assert k.run("print(6 * 7)").stdout() == "42\n"
        first = k.run("%%gpu\nprint('on the worker')")
        assert first.stdout() == "on the worker\n", first.stderr()
        assert first.footers() and first.footers()[-1]["status"] == "ok"
        # on that backend, not a second one started by the cell
        assert json.loads(runtime.read_text())["pid"] == pid
    finally:
        k.shutdown()


@pytest.mark.parametrize("early", ["1", "0"])
def test_the_embedded_backend_starts_a_worker_with_itself_unless_told_not_to(fresh_kernel_env, early):
    """JUPYTER_GPU_EARLY_WORKER (default 1): the backend a kernel starts starts one worker as it
    starts, so the first %%gpu cell finds it up; 0: none, and the first cell starts its own."""
    runtime = Path(fresh_kernel_env["JUPYTER_GPU_RUNTIME_DIR"]) / "backend.json"
    k = LiveKernel(dict(fresh_kernel_env, JUPYTER_GPU_EARLY_WORKER=early))
    try:
        load = k.run("%load_ext jupyter_gpu\nfrom jupyter_gpu.notebook import extension\n"
                     "print(extension.magics.session.id)")
        sid = load.stdout().strip()
        assert k.wait_until(lambda: _holds(runtime, sid), 90)
        info = json.loads(runtime.read_text())
        pool = runtime_info(info["url"], info["token"], 60)["warm_pool"]  # waits on the pool, not a sleep
        assert pool == ({"cpu": 1} if early == "1" else {}), pool
        first = k.run("%%gpu\nprint('on the worker')")
        assert first.stdout() == "on the worker\n", first.stderr()
        footer = first.footers()[-1]
        assert footer["cold"] is (early == "0"), footer
        pools = api_get(info["url"], info["token"], "/api/pools")["pools"]
        assert sum(p["workers"] for kind in pools.values() for p in kind.values()) == 1  # one start, either way
    finally:
        k.shutdown()


def test_the_embedded_backend_starts_while_the_loading_cell_runs(fresh_kernel_env):
    """Its start begins as `%load_ext` begins (beside the kernel's imports of jupyter-gpu), not
    after the cell; the connection made after the cell takes that start's backend."""
    runtime = Path(fresh_kernel_env["JUPYTER_GPU_RUNTIME_DIR"]) / "backend.json"
    k = LiveKernel(fresh_kernel_env)
    try:
        load = k.run("%load_ext jupyter_gpu\nfrom jupyter_gpu._client import embedded\n"
                     "from jupyter_gpu.notebook import extension\n"
                     "print(embedded._soon is not None, extension.magics.session.id)")
        begun, sid = load.stdout().split()
        assert begun == "True", load.stdout()
        assert k.wait_until(lambda: _holds(runtime, sid), 90)
        assert k.run("%%gpu\nprint('up')").stdout() == "up\n"
    finally:
        k.shutdown()


@pytest.mark.parametrize("form", ["magic", "sidebar"])
def test_a_backend_named_in_the_loading_cell_is_used_and_no_embedded_one_starts(fresh_kernel_env, tmp_path, form):
    runtime = Path(fresh_kernel_env["JUPYTER_GPU_RUNTIME_DIR"]) / "backend.json"
    proc, url = start_backend(tmp_path, "--token", "named-token")
    k = LiveKernel(fresh_kernel_env)
    # (the sidebar's form: labextension/src/model.ts configCode)
    use = (f"%gpu use {url} --token named-token" if form == "magic" else
           f"get_ipython().run_line_magic('gpu', \"use {url} --token named-token\")")
    try:
        load = k.run(f"%load_ext jupyter_gpu\n{use}\nfrom jupyter_gpu._client import embedded\n"
                     "from jupyter_gpu.notebook import extension\nprint(embedded._soon is None)\n"
                     "print(extension.magics.session.id)")
        assert load.stdout().splitlines()[-2] == "True", load.stdout()  # no start begun for it
        sid = load.stdout().strip().splitlines()[-1]
        assert sid in api_get(url, "named-token", "/api/status")["sessions"]
        # the background connect found the session connected (it runs as the loading cell ends)
        assert k.run("import threading\nprint(any(t.name == 'jupyter-gpu-preconnect' and t.is_alive() "
                     "for t in threading.enumerate()))").stdout() == "False\n"
        assert not runtime.exists(), "an embedded backend was started although the cell named one"
        assert k.run("%%gpu\nprint('named')").stdout() == "named\n"
        assert not runtime.exists()
    finally:
        k.shutdown()
        stop_backend(proc)
