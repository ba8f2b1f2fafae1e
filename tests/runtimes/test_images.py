"""`%%gpu --pip` and `jupyter_gpu.Image` on every runtime (issue 23): real builds of small real
packages from the package index: uv environments (local), layer images built by the engine
(docker), Ray's runtime_env (ray).  The kernel has neither toolz version these tests install.

What the tests build is removed after the module (the two-layer test's first layer carries a fresh
marker, so each run builds it): the docker runtime's layer images, the local runtime's layer
directories."""
from __future__ import annotations

import json
import shutil
import uuid

import pytest

from tests.conftest import strip_ansi

pytestmark = pytest.mark.timeout(600)  # a first build: a Ray virtualenv, a layer image on a fresh worker image

PACKAGE, OTHER = "toolz==0.12.1", "toolz==0.12.0"  # tiny, pure Python, not installed here
_made: list[str] = []  # layer hashes this module built for itself (removed at its end)


@pytest.fixture(scope="module", autouse=True)
def _clean_up_builds():
    """After every runtime's backend of this module is gone: what its builds left."""
    yield
    from jupyter_gpu_backend.runtimes.envs import default_root

    for h in _made:
        shutil.rmtree(default_root() / h, ignore_errors=True)
        (default_root() / f"{h}.lock").unlink(missing_ok=True)
    try:
        import docker

        from jupyter_gpu_backend.runtimes.docker_envs import LAYER_LABEL

        client = docker.from_env()
        client.ping()
    except Exception:
        return
    for h in _made:
        for image in client.images.list(filters={"label": f"{LAYER_LABEL}={h}"}):
            for tag in image.tags:
                try:
                    client.images.remove(tag)
                except docker.errors.APIError:
                    pass  # a container of another run still uses it


def built(cell) -> list[str]:
    """The layers the cell's build said it built (their hashes' first 12 hex)."""
    return [line.split("(")[-1].rstrip(")") for line in strip_ansi(cell.stderr()).splitlines()
            if line.startswith("jupyter-gpu: building image layer") and line.endswith(")")]


def test_a_pip_cell_imports_a_package_the_kernel_does_not_have(kernel, runtime):
    from jupyter_gpu.notebook.image import from_pip_line

    _made.extend(from_pip_line(f'"{PACKAGE}"').spec()["hashes"][1:])
    assert kernel.run("import importlib.util\nprint(importlib.util.find_spec('toolz'))").stdout() == "None\n"
    cell = kernel.run(f'%%gpu --pip "{PACKAGE}"\nimport toolz\nprint(toolz.__version__)', timeout=500)
    assert cell.stdout() == "0.12.1\n", strip_ansi(cell.stderr())[-3000:]
    (f,) = cell.footers()
    assert f["status"] == "ok" and f["image"].startswith("env-") and f["cold"], f
    # the same spec again: its warm worker, nothing built
    again = kernel.run(f'%%gpu --pip "{PACKAGE}"\nprint(toolz.curry.__name__)')
    assert again.stdout() == "curry\n" and "build" not in again.footers()[0]["timings"]
    assert again.footers()[0]["worker"] == f["worker"]


def test_an_image_of_two_layers_rebuilds_only_its_changed_last_layer(kernel, runtime):
    if runtime.name == "ray":
        pytest.skip("a Ray runtime_env is one piece, made by Ray: there are no layers to keep")
    mark = uuid.uuid4().hex  # a first layer no earlier run has built
    kernel.run(f"import jupyter_gpu\nfirst = jupyter_gpu.Image.from_kernel().run_commands('echo {mark}')\n"
               f"one = first.pip_install({PACKAGE!r})\ntwo = first.pip_install({OTHER!r})")
    # the layers' hashes: run, one's pip, two's pip (a layer is hashed with its parent's hash)
    hashes = json.loads(kernel.run("import json\nprint(json.dumps([*one.spec()['hashes'][1:], "
                                   "two.spec()['hashes'][-1]]))").stdout())
    _made.extend(hashes)
    a = kernel.run("%%gpu --image one\nimport toolz\nprint(toolz.__version__)", timeout=500)
    assert a.stdout() == "0.12.1\n", strip_ansi(a.stderr())[-3000:]
    assert built(a) == [h[:12] for h in hashes[:2]]  # both layers, run then pip
    assert a.footers()[0]["timings"]["build"] > 0
    b = kernel.run("%%gpu --image two\nimport toolz\nprint(toolz.__version__)", timeout=500)
    assert b.stdout() == "0.12.0\n", strip_ansi(b.stderr())[-3000:]
    assert built(b) == [hashes[2][:12]]  # only the changed last layer: its parent was there


def test_a_package_that_does_not_exist_fails_the_cell_with_the_installers_words_before_any_worker(kernel, runtime):
    from jupyter_gpu.notebook.image import from_pip_line

    line = '"jupyter-gpu-no-such-package-zz==1.0"'
    bad = kernel.run(f'%%gpu --pip {line}\nprint("ran")', ok=False, timeout=300)
    content = bad.reply["content"]
    assert content["ename"] == "ImageBuildFailed", content
    # the resolver's own words (uv's: "... was not found in the package registry")
    assert "jupyter-gpu-no-such-package-zz" in content["evalue"] and "not found" in content["evalue"], content["evalue"]
    assert "ran" not in bad.stdout() and bad.footers() == []
    assert from_pip_line(line).name not in kernel.run("%gpu status").stdout()  # no worker was leased for it


def test_on_docker_every_kind_of_layer_is_in_the_image_and_a_missing_registry_image_says_why(kernel, runtime, tmp_path):
    if runtime.name != "docker":
        pytest.skip("apt_install, add_local_dir and from_registry are the docker runtime's")
    mark = uuid.uuid4().hex[:12]
    (tmp_path / "data.txt").write_text("beside the notebook")
    (tmp_path / f"helper_{mark}.py").write_text("X = 42\n")
    kernel.run(f"import jupyter_gpu, sys\nsys.path.insert(0, {str(tmp_path)!r})\n"
               "img = (jupyter_gpu.Image.debian_slim().apt_install('jq')\n"
               "       .env({'MODE': 'a \"quoted\" $HOME \\\\ value'})\n"
               f"       .run_commands('echo \"$MODE\" > /etc/mode-{mark}', 'id -u > /etc/who-{mark}')\n"  # as root
               f"       .add_local_python_source('helper_{mark}').add_local_dir({str(tmp_path)!r}, '/data/{mark}'))")
    _made.extend(json.loads(kernel.run("import json\nprint(json.dumps(img.spec()['hashes'][1:]))").stdout()))
    cell = kernel.run(f"%%gpu --image img\nimport os, subprocess, helper_{mark}\n"
                      "print(subprocess.run(['jq', '--version'], capture_output=True, text=True).stdout.strip())\n"
                      f"print(os.environ['MODE'])\nprint(open('/etc/mode-{mark}').read().strip())\n"
                      f"print(open('/etc/who-{mark}').read().strip())\nprint(helper_{mark}.X)\n"
                      f"print(open('/data/{mark}/data.txt').read())", timeout=500)
    assert cell.stdout().splitlines() == ["jq-1.6", 'a "quoted" $HOME \\ value', 'a "quoted" $HOME \\ value',
                                          "0", "42", "beside the notebook"], strip_ansi(cell.stderr())[-3000:]
    said = strip_ansi(cell.stderr())
    assert "Step 2/" in said and "Setting up jq" in said  # the engine's build, streamed into the cell
    assert len(built(cell)) == 5 and cell.footers()[0]["timings"]["build"] > 0
    kernel.run("missing = jupyter_gpu.Image.from_registry('jupyter-gpu-test/not-here:1').pip_install('toolz')")
    bad = kernel.run("%%gpu --image missing\nprint('ran')", ok=False)
    assert bad.reply["content"]["ename"] == "ImageBuildFailed" and bad.footers() == []
    assert "from_registry('jupyter-gpu-test/not-here:1'): the image is not on this machine and pulling it failed" \
        in bad.reply["content"]["evalue"]


TABULATE_OLD, TABULATE_NEW, JOKES = "tabulate==0.8.10", "tabulate==0.9.0", "pyjokes==0.8.3"  # tiny, pure, no deps
DIFFERS = "the worker's environment differs from the kernel's in what this cell uses"


def _installed(name: str) -> bool:
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "pip", "show", "-q", name], capture_output=True).returncode == 0


def _pip(kernel, requirement: str) -> None:
    cell = kernel.run(f"%pip install -q --no-deps --disable-pip-version-check {requirement}", timeout=300)
    assert "error" not in (cell.stdout() + cell.stderr()).lower(), cell.stdout() + cell.stderr()


@pytest.fixture
def kernel_packages():
    """tabulate and pyjokes absent from the kernel's environment before the test and after it."""
    import subprocess
    import sys

    here = [n for n in ("tabulate", "pyjokes") if _installed(n)]
    if here:
        pytest.fail(f"{', '.join(here)} is installed in {sys.prefix} already: this test installs and removes it")
    _forget_followed()
    yield
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", "tabulate", "pyjokes"], capture_output=True)
    _forget_followed()


def _forget_followed() -> None:
    """The backends' directories of the kernel's versions that hold either package (follow.py)."""
    from jupyter_gpu_backend.runtimes.base import follow_root_dir

    for info in follow_root_dir().glob("*/site-packages/*.dist-info"):
        if info.name.startswith(("tabulate-", "pyjokes-")):
            shutil.rmtree(info.parent.parent, ignore_errors=True)


def test_a_default_worker_follows_the_kernels_pip_installs_without_losing_its_namespace(kernel, runtime,
                                                                                         kernel_packages):
    # docker's worker image has neither package: the backend gives its workers the kernel's versions
    # (scheduling/follow.py); local and ray workers run the kernel's own environment here
    version = "%%gpu\nimport tabulate\nprint(tabulate.__version__, kept)"
    kernel.run("%gpu release")
    _pip(kernel, TABULATE_OLD)
    first = kernel.run("%%gpu\nkept = 'kept'\n" + version.partition("\n")[2], timeout=300)
    said = strip_ansi(first.stderr())
    assert first.stdout() == "0.8.10 kept\n" and DIFFERS not in said, said[-2000:]
    worker = first.footers()[-1]["worker"]
    if runtime.name == "docker":
        assert "giving the worker the kernel's tabulate==0.8.10" in said, said
        assert first.footers()[-1]["timings"]["build"] > 0

    # a package new to the kernel: the same warm worker imports it, its namespace kept
    _pip(kernel, JOKES)
    _pip(kernel, TABULATE_NEW)
    jokes = kernel.run("%%gpu\nimport pyjokes\nprint(bool(pyjokes.get_joke()), kept)", timeout=300)
    assert jokes.stdout() == "True kept\n" and DIFFERS not in jokes.stderr(), strip_ansi(jokes.stderr())[-2000:]
    assert jokes.footers()[-1]["worker"] == worker and not jokes.footers()[-1]["cold"]

    # upgraded in the kernel: the warm worker has 0.8.10 loaded, and one table says so and what to do
    warm = kernel.run(version, timeout=300)
    said = strip_ansi(warm.stderr())
    assert warm.stdout() == "0.8.10 kept\n" and DIFFERS in said and "%gpu release" in said, said[-2000:]
    row = next(line for line in said.splitlines() if line.strip().startswith("tabulate"))
    assert row.split()[:3] == ["tabulate", "0.9.0", "0.8.10"], row
    assert warm.footers()[-1]["worker"] == worker

    # a fresh worker imports the kernel's new version
    kernel.run("%gpu release")
    fresh = kernel.run("%%gpu\nimport tabulate, pyjokes\nfrom importlib.metadata import version\n"
                       "print(tabulate.__version__, version('pyjokes'))", timeout=300)
    assert fresh.stdout() == "0.9.0 0.8.3\n" and DIFFERS not in fresh.stderr(), strip_ansi(fresh.stderr())[-2000:]
    assert fresh.footers()[-1]["worker"] != worker
