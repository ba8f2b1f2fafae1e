"""The "Python 3 (jupyter-gpu)" kernelspec: its provisioner starts the embedded backend as the kernel
starts, with the kernel's environment, and the kernel's `%%gpu` cells then use that backend (no
second one, no cold start of their own).  Real kernels through jupyter_client, real backends."""

import json
import select
import time
import urllib.request
import os
import sys

import psutil
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from jupyter_client.provisioning import KernelProvisionerFactory

from jupyter_gpu._client.provisioner import NAME, GPUProvisioner

from tests.conftest import FOOTER_MIME

pytestmark = pytest.mark.timeout(180)


def spec_dir(tmp_path, provisioner: bool = True):
    """A kernelspec like the installed one, on this interpreter, in a directory of its own."""
    d = tmp_path / "kernels" / "gpu-test"
    d.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "gpu test", "language": "python"}
    if provisioner:
        spec["metadata"] = {"kernel_provisioner": {"provisioner_name": NAME}}
    (d / "kernel.json").write_text(json.dumps(spec))
    return str(d.parent)


def start(tmp_path, env, provisioner=True):
    km = KernelManager(kernel_name="gpu-test", kernel_spec_manager=KernelSpecManager(
        kernel_dirs=[spec_dir(tmp_path, provisioner)]))
    km.start_kernel(env=env, cwd=str(tmp_path))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    return km, kc


def stop(km, kc):
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def run(kc, code):
    """(reply content, [iopub messages]) of ``code`` run in the kernel."""
    msgs = []
    reply = kc.execute_interactive(code, timeout=120, output_hook=msgs.append)
    return reply["content"], msgs


def footer(msgs):
    for m in msgs:
        data = m["content"].get("data") or {}
        if FOOTER_MIME in data and "timings" in data[FOOTER_MIME]:
            return data[FOOTER_MIME]
    raise AssertionError(f"no footer in {[m['msg_type'] for m in msgs]}")


def backends_of(runtime_dir) -> list:
    """The embedded backend processes of this runtime directory (by their runtime file's path)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "jupyter_gpu_backend" in cmd and os.path.join(str(runtime_dir), "backend.json") in cmd:
            found.append(p)
    return found


def test_the_kernelspec_is_installed_and_names_the_provisioner():
    """What a user picks in JupyterLab's launcher: installed with the package (shared-data)."""
    spec = KernelSpecManager().get_kernel_spec("jupyter-gpu")
    assert spec.display_name == "Python 3 (jupyter-gpu)"
    assert spec.metadata["kernel_provisioner"]["provisioner_name"] == NAME
    assert NAME in KernelProvisionerFactory.instance().provisioners  # the entry point, found


def test_the_backend_starts_with_the_kernel_and_its_cells_run_there(tmp_path, fresh_kernel_env):
    runtime_dir = fresh_kernel_env["JUPYTER_GPU_RUNTIME_DIR"]
    # the kernel's environment, not the one of the process starting it, is the backend's
    env = {**fresh_kernel_env, "JG_PROVISIONER_MARK": "kernel-env"}
    km, kc = start(tmp_path, env)
    try:
        assert isinstance(km.provisioner, GPUProvisioner)
        begun = km.provisioner.backend_start
        assert begun is not None and begun.done.wait(60) and begun.result, "no backend came up"
        url, token = begun.result
        info = json.loads(open(os.path.join(runtime_dir, "backend.json")).read())
        assert info["url"] == url  # in the kernel's runtime dir
        backend = psutil.Process(info["pid"])
        assert backend.environ()["JG_PROVISIONER_MARK"] == "kernel-env"
        assert backend.cwd() == str(tmp_path)  # the kernel's directory, as a backend the kernel starts
        # before any cell ran, its early worker is up
        assert any("jupyter_gpu_worker" in " ".join(c.cmdline()) for c in backend.children(recursive=True))

        reply, _ = run(kc, "%load_ext jupyter_gpu")
        assert reply["status"] == "ok"
        # it started quietly (its imports at a lower priority, _wire/priority.py), but the cell runs at
        # the normal one, and the worker's environment does not say how it started
        assert "--quiet-start" in backend.cmdline()
        reply, msgs = run(kc, "%%gpu\nimport os, threading\nx = 6 * 7\n"
                              "print(x, os.getpriority(os.PRIO_PROCESS, threading.get_native_id()),"
                              " os.environ.get('JUPYTER_GPU_QUIET_START'))")
        assert reply["status"] == "ok", reply
        assert f"42 {os.getpriority(os.PRIO_PROCESS, 0)} None\n" in "".join(
            m["content"].get("text", "") for m in msgs if m["msg_type"] == "stream")
        assert backend.nice() == os.getpriority(os.PRIO_PROCESS, 0)  # (its main thread's)
        assert footer(msgs)["cold"] is False, "the first cell waited for a worker's start of its own"
        assert [p.pid for p in backends_of(runtime_dir)] == [backend.pid], "the kernel started another backend"
    finally:
        stop(km, kc)


def test_a_kernel_loading_the_extension_while_its_backend_still_starts_gets_that_one(tmp_path, fresh_kernel_env):
    """The kernel's own find-or-start waits on the lock the provisioner's start holds: one backend."""
    runtime_dir = fresh_kernel_env["JUPYTER_GPU_RUNTIME_DIR"]
    km, kc = start(tmp_path, fresh_kernel_env)
    try:
        # sent as soon as the kernel answers, whether or not the backend is up yet
        reply, msgs = run(kc, "%load_ext jupyter_gpu\n")
        reply, msgs = run(kc, "%%gpu\nimport os\nprint(os.getpid() != 0)")
        assert reply["status"] == "ok" and footer(msgs)
        assert km.provisioner.backend_start.done.wait(60)
        assert len(backends_of(runtime_dir)) == 1
    finally:
        stop(km, kc)


def test_a_kernel_configured_for_another_backend_starts_none(tmp_path, fresh_kernel_env):
    env = {**fresh_kernel_env, "JUPYTER_GPU_URL": "http://127.0.0.1:9", "JUPYTER_GPU_TOKEN": "t"}
    km, kc = start(tmp_path, env)
    try:
        assert km.provisioner.backend_start.done.wait(60) and km.provisioner.backend_start.result is None
        assert not os.path.exists(os.path.join(env["JUPYTER_GPU_RUNTIME_DIR"], "backend.json"))
        assert not backends_of(env["JUPYTER_GPU_RUNTIME_DIR"])
    finally:
        stop(km, kc)


def test_a_backend_no_kernel_uses_leaves_after_its_grace(tmp_path, fresh_kernel_env):
    """A kernel of the kernelspec whose notebook never loads the extension costs its backend and
    early worker for JUPYTER_GPU_EMBEDDED_GRACE seconds (2 here), not for as long as it lives."""
    km, kc = start(tmp_path, fresh_kernel_env)
    try:
        begun = km.provisioner.backend_start
        assert begun.done.wait(60) and begun.result
        info = json.loads(open(os.path.join(fresh_kernel_env["JUPYTER_GPU_RUNTIME_DIR"], "backend.json")).read())
        backend = psutil.Process(info["pid"])
        workers = [c for c in backend.children(recursive=True) if "jupyter_gpu_worker" in " ".join(c.cmdline())]
        backend.wait(timeout=60)  # its exit is the event; the kernel is still running
        assert km.is_alive()
        gone, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, alive
    finally:
        stop(km, kc)


def test_the_early_worker_imports_the_preload_before_the_first_cell(tmp_path, fresh_kernel_env):
    """While the kernel still starts, its early worker imports JUPYTER_GPU_EARLY_PRELOAD's modules
    (agent.preload_early): the notebook's first cell finds them imported.  The probe module says
    when it was imported through a FIFO (the event waited for), and by which process."""
    probes = tmp_path / "probes"
    probes.mkdir()
    fifo = tmp_path / "imported.fifo"
    os.mkfifo(fifo)
    (probes / "jgp_kernel_probe.py").write_text(
        "import os\nfd = os.open(%r, os.O_WRONLY | os.O_NONBLOCK)\nos.write(fd, b'%%d\\n' %% os.getpid())\n"
        "os.close(fd)\n" % str(fifo))
    env = {**fresh_kernel_env, "JUPYTER_GPU_EARLY_PRELOAD": "jgp_kernel_probe",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(probes), fresh_kernel_env.get("PYTHONPATH")]))}
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # (its writer needs a reader to open it)
    try:
        km, kc = start(tmp_path, env)
        try:
            ready, _, _ = select.select([reader], [], [], 120)
            assert ready, "the early worker did not import its preload"
            importer = int(os.read(reader, 64).split()[0])
            assert "jupyter_gpu_worker" in " ".join(psutil.Process(importer).cmdline())
            run(kc, "%load_ext jupyter_gpu")
            reply, msgs = run(kc, "%%gpu\nimport os, sys\nprint(os.getpid(), 'jgp_kernel_probe' in sys.modules)")
            assert reply["status"] == "ok", reply
            text = "".join(m["content"].get("text", "") for m in msgs if m["msg_type"] == "stream")
            assert text == f"{importer} True\n"  # the cell's worker is the one that preloaded
            assert footer(msgs)["cold"] is False
        finally:
            stop(km, kc)
    finally:
        os.close(reader)


def test_the_zygote_waits_for_a_pause_in_the_kernels_cells(tmp_path, fresh_kernel_env):
    """The local runtime's zygote imports torch and the rest (~2 s of a core here) for later cold
    starts.  It starts once no worker was spawned and no cell seen for ZYGOTE_QUIET_S, so not among
    a notebook's first cells (it did, 1 s after the early worker, while they ran); then it starts."""
    from jupyter_gpu_backend.runtimes.local import ZYGOTE_QUIET_S

    km, kc = start(tmp_path, fresh_kernel_env)
    try:
        run(kc, "%load_ext jupyter_gpu")
        # cells back to back (lane cells: their worker reports them), for well over the quiet time
        reply, _ = run(kc, f"import time\n_t0 = time.monotonic()\nwhile time.monotonic() - _t0 < {3 * ZYGOTE_QUIET_S}:\n"
                           "    get_ipython().run_cell_magic('gpu', '', 'x = 1')\n")
        assert reply["status"] == "ok", reply
        last_cell = time.time()
        info = json.loads(open(os.path.join(fresh_kernel_env["JUPYTER_GPU_RUNTIME_DIR"], "backend.json")).read())
        backend = psutil.Process(info["pid"])
        req = urllib.request.Request(info["url"] + "/api/runtime?wait=120",
                                     headers={"Authorization": f"token {info['token']}"})
        with urllib.request.urlopen(req, timeout=130) as r:  # answers once the zygote is ready
            assert json.loads(r.read())["zygote"]["ready"]
        zygotes = [c for c in backend.children() if "jupyter_gpu_worker.zygote" in " ".join(c.cmdline())]
        assert len(zygotes) == 1
        started = zygotes[0].create_time()
        assert started > last_cell - ZYGOTE_QUIET_S / 2, (
            f"the zygote started {last_cell - started:.1f} s before the cells paused")
    finally:
        stop(km, kc)
