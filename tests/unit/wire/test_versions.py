"""_wire/versions.py and the cell's table (_wire/handshake.py), on real distributions written into a
real site-packages directory on sys.path; and notebook/uses.py's reading of a cell's imports."""
from __future__ import annotations

import importlib
import shutil
import sys

import pytest

from jupyter_gpu._wire import handshake, versions


def install(site, name: str, version: str, own: str | None = None) -> None:
    """Distribution ``name`` (import name the same) of ``version`` in ``site``, replacing any other;
    its module's ``__version__`` is ``own`` (default: ``version``)."""
    for old in site.glob(f"{name}-*.dist-info"):
        shutil.rmtree(old)
    shutil.rmtree(site / name, ignore_errors=True)
    (site / name).mkdir()
    (site / name / "__init__.py").write_text(f"__version__ = {own or version!r}\n")
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(f"{name}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    d = tmp_path / "site-packages"
    d.mkdir()
    monkeypatch.syspath_prepend(str(d))
    yield d
    for name in [m for m in sys.modules if m.startswith("jg_ver_")]:
        del sys.modules[name]


def test_installed_versions_are_kept_until_the_environment_changes(site):
    install(site, "jg_ver_a", "1.0")
    inst = versions.Installed()
    assert inst.refresh() is False and str(site) in inst.dirs  # the first look: nothing to forget
    assert inst.version("jg_ver_a") == "1.0" and inst.version("jg_ver_nothing") is None
    assert inst.refresh() is False  # unchanged: answered from memory
    install(site, "jg_ver_a", "2.0")  # an upgrade adds and removes entries of site-packages
    assert inst.refresh() is True
    assert inst.version("jg_ver_a") == "2.0"


def test_a_worker_compares_its_loaded_version_and_says_what_to_do(site, monkeypatch):
    install(site, "jg_ver_b", "1.0")
    install(site, "jg_ver_c", "1.0")
    here = versions.Loaded()
    assert here.differences({"jg_ver_b": "1.0", "jg_ver_c": "1.0"}) == []  # same, none loaded
    importlib.import_module("jg_ver_b")  # loaded at 1.0 by this process, before the upgrade:
    install(site, "jg_ver_b", "2.0")
    install(site, "jg_ver_c", "2.0")
    monkeypatch.setattr(versions, "BIRTH_NS", (site / "jg_ver_b-2.0.dist-info").stat().st_mtime_ns - 1)
    rows = here.differences({"jg_ver_b": "2.0", "jg_ver_c": "3.0", "jg_ver_gone": "1.0"})
    assert rows == [
        ("jg_ver_b", "2.0", "1.0", "%gpu release: a fresh worker imports 2.0"),  # loaded: a fresh worker has 2.0
        ("jg_ver_c", "3.0", "2.0", '%%gpu --pip "jg_ver_c==3.0"'),  # not loaded: the disk has another version
        ("jg_ver_gone", "1.0", None, '%%gpu --pip "jg_ver_gone==1.0"'),
    ]
    assert here.differences({"jg_ver_c": "2.0"}) == []  # not loaded: it imports the disk's 2.0
    text = handshake.table(rows, "this cell", handshake.CELL_ADVICE)
    lines = text.splitlines()
    assert lines[0] == "jupyter-gpu: the worker's environment differs from the kernel's in what this cell uses:"
    assert lines[1].split() == ["kernel", "worker", "what", "to", "do"]
    assert lines[2].split()[:3] == ["jg_ver_b", "2.0", "1.0"] and "not installed" in lines[4]
    assert lines[1].index("worker") == lines[2].index("1.0")  # columns line up
    assert lines[-1] == handshake.CELL_ADVICE


def test_a_module_loaded_by_a_process_younger_than_its_install_is_the_disks_version(site, monkeypatch):
    # its __version__ spells it otherwise than its metadata (certifi does): no false row
    install(site, "jg_ver_d", "1.0.post1", own="1.0")
    monkeypatch.setattr(versions, "BIRTH_NS", (site / "jg_ver_d-1.0.post1.dist-info").stat().st_mtime_ns)
    importlib.import_module("jg_ver_d")
    here = versions.Loaded()
    assert here.differences({"jg_ver_d": "1.0.post1"}) == [] and here.here("jg_ver_d") == "1.0.post1"


def test_the_function_table_keeps_its_three_columns():
    text = handshake.table([("numpy", "1.0", "2.0"), ("pandas", "2.0", None)], "f")
    assert "what to do" not in text and text.splitlines()[3].split() == ["pandas", "2.0", "not", "installed"]
    assert "a function pickled by one version" in text


def test_a_cells_imports_are_its_third_party_top_level_packages():
    from IPython.core.interactiveshell import InteractiveShell

    from jupyter_gpu.notebook import uses

    shell = InteractiveShell.instance()
    source = ("import os, numpy.linalg as la\nfrom pandas import DataFrame\nfrom . import local\n"
              "def f():\n    import scipy\n!echo hi\nimport jupyter_gpu\n")
    assert uses._imported(shell, source) == ("numpy", "pandas", "scipy")
    assert uses._imported(shell, "x = 1") == () and uses._imported(shell, "import (") == ()
    assert uses._imported(shell, "%%time\nimport numpy\n") == ("numpy",)  # under a nested cell magic
    import numpy

    assert uses._package_of(numpy.zeros(1)) == "numpy" and uses._package_of(numpy) == "numpy"
    assert uses._package_of(1) is None and uses._package_of(sys) is None
    fields = uses.fields(shell, "import numpy\nimport os", [], {})
    assert fields == {"versions": {"numpy": numpy.__version__}}
    assert uses.fields(shell, "x = 1", ["y"], {"y": 2}) == {}  # nothing to compare: nothing sent
    spec = {"layers": [{"op": "pip", "packages": ["NumPy[extra]>=1"]}]}
    assert uses.fields(shell, "import numpy", [], {}, spec) == {}  # the image asks for its own numpy
