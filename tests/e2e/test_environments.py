"""Workers follow the kernel's environment (issue 23): a `%pip install` in the kernel reaches the
next `%%gpu` cell, and a cell whose packages the worker has at another version says so first.

A real kernel installs small real packages from the package index into its own environment (the
one the embedded backend's workers share) with `%pip install`; the embedded backend's zygote
preloads one of them, as it preloads numpy and torch, so a worker forked from it has that version
loaded.  Both packages are uninstalled at the end, so a rerun starts clean.
"""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import LiveKernel

from .helpers import LOAD

pytestmark = pytest.mark.timeout(600)

OLD, NEW, OTHER = "tabulate==0.8.10", "tabulate==0.9.0", "pyjokes==0.8.3"  # tiny, pure Python, no dependencies
TABLE = "the worker's environment differs from the kernel's in what this cell uses"
VERSION = "%%gpu\nimport tabulate\nprint(tabulate.__version__)"


def installed(name: str) -> bool:
    return subprocess.run([sys.executable, "-m", "pip", "show", "-q", name], capture_output=True).returncode == 0


@pytest.fixture
def packages():
    """tabulate and pyjokes absent before the test and after it."""
    here = [n for n in ("tabulate", "pyjokes") if installed(n)]
    if here:
        pytest.fail(f"{', '.join(here)} is installed in {sys.prefix} already: this test installs and removes it "
                    f"(`{sys.executable} -m pip uninstall -y {' '.join(here)}` if nothing else needs it)")
    yield
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", "tabulate", "pyjokes"], capture_output=True)


def runtime(env: dict, wait: float = 0) -> dict:
    """The embedded backend's /api/runtime (``wait``: until its zygotes are ready)."""
    info = json.loads((Path(env["JUPYTER_GPU_RUNTIME_DIR"]) / "backend.json").read_text())
    req = urllib.request.Request(f"{info['url']}/api/runtime?wait={wait}", headers={"Authorization": f"token {info['token']}"})
    with urllib.request.urlopen(req, timeout=wait + 30) as r:
        return json.load(r)


def pip(k: LiveKernel, requirement: str) -> None:
    cell = k.run(f"%pip install -q --no-deps --disable-pip-version-check {requirement}", timeout=300)
    assert "error" not in cell.stdout().lower() + cell.stderr().lower(), cell.stdout() + cell.stderr()


def test_pip_install_in_the_kernel_reaches_the_next_gpu_cell(packages, fresh_kernel_env):
    # the zygote preloads tabulate (as it does numpy): its forks have it loaded before any cell
    env = {**fresh_kernel_env, "JUPYTER_GPU_PRELOAD": "cloudpickle,IPython,tabulate"}
    k = LiveKernel(env)
    try:
        pip(k, OLD)
        k.run(LOAD)
        k.run("%gpu config --keep-warm 10m")
        first = k.run(VERSION)
        assert first.stdout() == "0.8.10\n" and TABLE not in first.stderr(), first.stderr()
        zygote = runtime(env, wait=120)["zygote"]  # ready now, and it imported tabulate 0.8.10
        assert zygote["ready"] and "tabulate" in zygote["preloaded"], zygote
        worker = first.footers()[-1]["worker"]

        # upgraded in the kernel: the warm worker has 0.8.10 loaded; before the cell runs, one table
        # names both versions and what gives the kernel's; the cell runs as it is
        pip(k, NEW)
        warm = k.run(VERSION)
        said = warm.stderr()
        assert warm.stdout() == "0.8.10\n", warm.stdout()
        assert TABLE in said and "0.9.0" in said and "0.8.10" in said and "%gpu release" in said, said
        row = next(line for line in said.splitlines() if line.strip().startswith("tabulate"))
        assert row.split()[:3] == ["tabulate", "0.9.0", "0.8.10"], row
        f = warm.footers()[-1]
        assert f["worker"] == worker and not f["cold"]  # nothing was restarted

        # a package new to the environment imports on that same warm worker: no table, no restart
        pip(k, OTHER)
        jokes = k.run("%%gpu\nimport pyjokes\nprint(len(pyjokes.get_joke()) > 0)")
        assert jokes.stdout() == "True\n" and TABLE not in jokes.stderr(), jokes.stdout() + jokes.stderr()
        assert jokes.footers()[-1]["worker"] == worker and not jokes.footers()[-1]["cold"]
        again = k.run(VERSION)  # the table again: the worker still has 0.8.10 loaded
        assert TABLE in again.stderr() and again.stdout() == "0.8.10\n"

        # asked for: a fresh worker - not forked from the zygote that preloaded 0.8.10 - has 0.9.0
        k.run("%gpu release")
        fresh = k.run(VERSION)
        assert fresh.stdout() == "0.9.0\n" and TABLE not in fresh.stderr(), fresh.stdout() + fresh.stderr()
        assert fresh.footers()[-1]["cold"] and fresh.footers()[-1]["worker"] != worker

        # the zygote was started again with the new packages: the next cold start is a fork of it
        zygote = runtime(env, wait=120)["zygote"]
        assert zygote["ready"] and "tabulate" in zygote["preloaded"], zygote
        k.run("%gpu release")
        forked = k.run(VERSION)
        f = forked.footers()[-1]
        assert forked.stdout() == "0.9.0\n" and TABLE not in forked.stderr(), forked.stdout() + forked.stderr()
        assert f["cold"] and f["start_method"] == "zygote", f
    finally:
        k.shutdown()
