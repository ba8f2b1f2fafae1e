"""Which modules a `%%gpu` cell's kernel imports early, while the worker runs it (notebook/prefetch.py)."""
from __future__ import annotations

import sys
import threading

import pytest
from IPython.core.interactiveshell import InteractiveShell

from jupyter_gpu.notebook import prefetch, uses


@pytest.fixture
def shell():
    return InteractiveShell.instance()


def test_top_level_absolute_imports_in_order(shell):
    src = ("import numpy as np, os.path\n%time x = 1\n!ls\nfrom IPython.display import HTML\n"
           "from . import sibling\nif True:\n    import json\ndef f():\n    import csv\nimport numpy")
    assert uses.top_level_modules(shell, src) == ("numpy", "os.path", "IPython.display")


def test_a_cell_that_does_not_parse_imports_nothing(shell):
    assert uses.top_level_modules(shell, "import numpy as\n") == ()


def test_only_modules_installed_in_the_environment_not_the_notebooks_own(tmp_path, monkeypatch):
    (tmp_path / "beside_the_notebook.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    dirs = prefetch._installed_dirs()
    assert prefetch._installed("json", dirs)  # the standard library
    assert prefetch._installed("xxhash", dirs)  # site-packages
    assert not prefetch._installed("beside_the_notebook", dirs)  # may be rewritten by the cell itself
    assert not prefetch._installed("no_such_module_anywhere", dirs)


def test_pyplot_only_under_the_inline_backend(monkeypatch):
    monkeypatch.delitem(sys.modules, "matplotlib", raising=False)
    monkeypatch.setenv("MPLBACKEND", prefetch._INLINE)
    assert not prefetch._gui_pyplot()
    monkeypatch.setenv("MPLBACKEND", "QtAgg")
    assert prefetch._gui_pyplot()
    monkeypatch.delenv("MPLBACKEND")
    assert prefetch._gui_pyplot()  # (outside ipykernel pyplot may pick a GUI)


def test_a_cell_that_installs_packages_or_imports_nothing_new_starts_no_thread(shell, monkeypatch):
    started = []
    monkeypatch.setattr(threading.Thread, "start", lambda self: started.append(self.name))
    prefetch.start(shell, "%pip install colorsys\nimport colorsys")
    prefetch.start(shell, "import sys, os")  # imported already
    prefetch.start(shell, "x = 1")
    assert started == []
    prefetch.start(shell, "import colorsys" if "colorsys" not in sys.modules else "import wave")
    assert started == ["jupyter-gpu-prefetch"]
