"""A `%%gpu` cell's text is transformed by IPython once, then remembered (cell_text.py): the answer
must always be the one IPython itself would give, and change whenever what IPython reads changes.
A real IPython shell, no kernel."""
from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.macro import Macro

from jupyter_gpu.notebook import cell_text
from jupyter_gpu.notebook.magics import empty_body

CELLS = [
    "%%gpu\nx = 1",
    "%%gpu --gpu A100 --keep-warm 5m\nfor i in range(3):\n    print(i)\n",
    "%%gpu --keep-warm $kw\nx = 1",
    "%%gpu\n%time y = 2\n!echo hi\n",
    "%%gpu --help",
    "%%gpu\nawait something()\n",
]


@pytest.fixture
def shell():
    sh = InteractiveShell.instance()
    sh.input_transformers_cleanup.append(empty_body)
    own = type(sh).transform_cell.__get__(sh), type(sh).should_run_async.__get__(sh)
    cell_text.install(sh)
    yield sh, own
    cell_text.uninstall(sh)
    sh.input_transformers_cleanup.remove(empty_body)
    sh.input_transformers_post.clear()
    sh.autocall = 0
    sh.autoawait = True
    sh.user_ns["get_ipython"] = sh.get_ipython


@pytest.mark.parametrize("code", CELLS)
def test_the_remembered_answers_are_ipythons_own(shell, code):
    sh, (transform, should_run_async) = shell
    for _ in range(2):  # first computed, then remembered
        assert sh.transform_cell(code) == transform(code)
        t = transform(code)
        assert sh.should_run_async(code, transformed_cell=t) == should_run_async(code, transformed_cell=t)


def test_a_cell_run_again_is_not_transformed_again(shell):
    sh, _ = shell
    calls = []

    def counting(lines):
        calls.append("".join(lines))
        return lines

    sh.input_transformers_cleanup.append(counting)
    try:
        for _ in range(3):
            sh.transform_cell("%%gpu\nx = 1")
        assert len(calls) == 1
        for _ in range(3):
            sh.transform_cell("x = 1")  # not a %%gpu cell: IPython each time
        assert len(calls) == 4
    finally:
        sh.input_transformers_cleanup.remove(counting)


def test_whatever_ipython_reads_besides_the_text_is_honoured(shell):
    sh, (transform, _) = shell
    code = "%%gpu\nx = 1"
    first = sh.transform_cell(code)

    sh.input_transformers_post.append(lambda lines: [line.replace("'gpu'", "'gpu' ") for line in lines])
    assert sh.transform_cell(code) == transform(code) != first

    sh.input_transformers_post.clear()
    sh.autocall = 2
    assert sh.transform_cell(code) == transform(code)

    sh.autocall = 0
    sh.user_ns["get_ipython"] = Macro("print('a macro')\n")  # the prefilter looks the name up
    changed = transform(code)
    assert changed != first and sh.transform_cell(code) == changed
    sh.user_ns["get_ipython"] = sh.get_ipython
    assert sh.transform_cell(code) == first

    checker = sh.prefilter_manager.checkers[0]
    checker.enabled = False
    try:
        assert sh.transform_cell(code) == transform(code)
    finally:
        checker.enabled = True


def test_autoawait_is_honoured(shell):
    sh, (transform, should_run_async) = shell
    code = "%%gpu\nawait something()\n"
    t = transform(code)
    sh.autoawait = False
    assert sh.should_run_async(code, transformed_cell=t) is False
    sh.autoawait = True
    assert sh.should_run_async(code, transformed_cell=t) == should_run_async(code, transformed_cell=t)


def test_a_failing_transform_fails_as_in_ipython_and_is_not_kept(shell):
    sh, _ = shell

    def broken(lines):
        raise SyntaxError("a transform that fails")

    sh.input_transformers_cleanup.append(broken)
    try:
        for _ in range(2):
            with pytest.raises(SyntaxError, match="a transform that fails"):
                sh.transform_cell("%%gpu\nx = 1")
    finally:
        sh.input_transformers_cleanup.remove(broken)
    assert "run_cell_magic" in sh.transform_cell("%%gpu\nx = 1")


def test_unloading_gives_the_shell_its_own_methods_back(shell):
    sh, _ = shell
    cell_text.install(sh)  # loading again keeps the one there
    assert isinstance(sh.transform_cell.__self__, cell_text.CellTextMemo)
    cell_text.uninstall(sh)
    assert sh.transform_cell.__self__ is sh and sh.should_run_async.__self__ is sh
