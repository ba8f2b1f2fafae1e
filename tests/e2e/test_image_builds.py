"""`jupyter_gpu.Image` and `%%gpu --pip` (issue 23): real builds with uv on the local runtime, of small
real packages from the package index; each test's kernel has its own embedded backend and build cache."""
from __future__ import annotations

import signal

import pytest

from tests.conftest import FOOTER_MIME, LiveKernel, strip_ansi

from .helpers import LOAD, kill_embedded_backend

pytestmark = pytest.mark.timeout(300)

# six 1.17.0 is the kernel's; toolz is not installed here (both tiny, pure Python)
OLD_SIX, NEW_PACKAGE = "six==1.16.0", "toolz==0.12.1"


@pytest.fixture
def env(fresh_kernel_env, tmp_path):
    return {**fresh_kernel_env, "XDG_CACHE_HOME": str(tmp_path / "cache")}  # the backend's build cache


def kernel(env) -> LiveKernel:
    k = LiveKernel(env)
    k.run(LOAD)
    return k


def built(cell) -> list[str]:
    """The layers the cell's build said it built (their hashes' first 12 hex)."""
    return [line.split("(")[-1].rstrip(")") for line in strip_ansi(cell.stderr()).splitlines()
            if line.startswith("jupyter-gpu: building image layer")]


def test_pip_builds_once_and_the_cell_runs_with_those_versions(env):
    k = kernel(env)
    try:
        local = k.run("import six\nprint(six.__version__)").stdout()
        assert local == "1.17.0\n"  # the kernel's own
        first = k.run(f'%%gpu --pip "{OLD_SIX} {NEW_PACKAGE}"\nimport six, toolz\nprint(six.__version__, toolz.__version__)')
        assert first.stdout() == "1.16.0 0.12.1\n"
        assert len(built(first)) == 1 and "+ toolz==0.12.1" in strip_ansi(first.stderr())
        (f,) = first.footers()
        assert f["timings"]["build"] > 0 and f["cold"]
        # the build was live: the cell's status line said so, and its output came before the footer
        phases = [e.msg["content"]["data"][FOOTER_MIME].get("phase") for e in first.iopub
                  if e.msg["msg_type"] in ("display_data", "update_display_data")
                  and FOOTER_MIME in e.msg["content"].get("data", {}) and e.msg["content"]["data"][FOOTER_MIME].get("live")]
        assert "build" in phases, phases
        # the kernel's own packages are still there, from the kernel's environment, under the overlay
        again = k.run(f'%%gpu --pip "{NEW_PACKAGE} {OLD_SIX}"\nimport numpy, IPython\nprint(six.__version__)')
        assert again.stdout() == "1.16.0\n" and built(again) == []  # the same spec (order aside): no build
        assert "build" not in again.footers()[0]["timings"]
        assert k.run("print(six.__version__)").stdout() == "1.17.0\n"  # the kernel itself is untouched
    finally:
        k.shutdown()


def test_an_image_of_two_layers_rebuilds_only_its_changed_layer_and_serves_functions(env):
    k = kernel(env)
    try:
        k.run(f"import jupyter_gpu\nbase = jupyter_gpu.Image.from_kernel().pip_install({OLD_SIX!r})\n"
              "img = base.env({'MODE': 'one'})")
        one = k.run("%%gpu --image img\nimport os, six\nprint(six.__version__, os.environ['MODE'])")
        assert one.stdout() == "1.16.0 one\n" and len(built(one)) == 1  # the pip layer (env: no build)
        k.run(f"img2 = img.pip_install({NEW_PACKAGE!r})")
        two = k.run("%%gpu --image img2\nimport os, six, toolz\nprint(six.__version__, os.environ['MODE'], toolz.__name__)")
        assert two.stdout() == "1.16.0 one toolz\n"
        assert len(built(two)) == 1 and built(two) != built(one)  # only the new last layer
        k.run("@jupyter_gpu.function(image=img2)\ndef versions():\n    import six, toolz\n"
              "    return six.__version__, toolz.__name__")
        assert k.run("print(versions.remote())").stdout() == "('1.16.0', 'toolz')\n"
    finally:
        k.shutdown()


def test_a_bad_package_or_a_layer_the_runtime_cannot_build_fails_before_any_worker(env):
    k = kernel(env)
    try:
        bad = k.run('%%gpu --pip "jupyter-gpu-no-such-package-zz==1.0"\nprint("ran")', ok=False)
        content = bad.reply["content"]
        assert content["ename"] == "ImageBuildFailed" and "jupyter-gpu-no-such-package-zz" in content["evalue"]
        assert "ran" not in bad.stdout() and bad.footers() == []
        apt = k.run("import jupyter_gpu\nimg = jupyter_gpu.Image.from_kernel().apt_install('sl')", ok=True)
        refused = k.run("%%gpu --image img\nprint('ran')", ok=False)
        assert refused.reply["content"]["ename"] == "ImageBuildFailed"
        assert "local runtime cannot build an image with apt_install; docker can" in refused.reply["content"]["evalue"]
        status = k.run("%gpu status").stdout()
        assert "env-" not in status  # no worker was leased for either
        assert apt.reply["content"]["status"] == "ok"
    finally:
        k.shutdown()


def test_the_build_cache_survives_a_backend_restart(env):
    k = kernel(env)
    try:
        first = k.run(f'%%gpu --pip "{NEW_PACKAGE}"\nimport toolz\nprint(toolz.__name__)')
        assert first.stdout() == "toolz\n" and len(built(first)) == 1
        assert kill_embedded_backend(env, signal.SIGTERM)
        after = k.run(f'%%gpu --pip "{NEW_PACKAGE}"\nimport toolz\nprint(toolz.__name__)')
        assert after.stdout() == "toolz\n" and built(after) == [] and "build" not in after.footers()[0]["timings"]
    finally:
        k.shutdown()


def test_debian_slim_is_a_fresh_environment_with_only_the_workers_packages_and_its_own(env):
    k = kernel(env)
    try:
        assert k.run("import importlib.util\nprint(importlib.util.find_spec('pandas') is not None)").stdout() == "True\n"
        k.run(f"import jupyter_gpu\nslim = jupyter_gpu.Image.debian_slim().pip_install({NEW_PACKAGE!r})")
        cell = k.run("%%gpu --image slim\nimport importlib.util, sys, toolz\n"
                     "print(importlib.util.find_spec('pandas') is None, toolz.__name__, sys.prefix != sys.base_prefix)",
                     timeout=280)
        assert cell.stdout() == "True toolz True\n"  # the kernel's pandas is not there; its own toolz is
        assert len(built(cell)) == 2  # the fresh base and the pip layer
        # a cell's values still travel (the same cloudpickle and numpy pinned as the kernel's)
        assert k.run("import numpy as np\na = np.arange(4)").reply["content"]["status"] == "ok"
        assert k.run("%%gpu --image slim\nb = a * 2").reply["content"]["status"] == "ok"
        assert k.run("print(b.tolist())").stdout() == "[0, 2, 4, 6]\n"
    finally:
        k.shutdown()
