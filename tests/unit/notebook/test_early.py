"""Which cells may go to their worker as their request arrives (early.plain_cell): only those
nothing between the request and the magic can change.  A real IPython shell, no kernel."""
from __future__ import annotations

import ast

import pytest
from IPython.core.interactiveshell import InteractiveShell

from jupyter_gpu.notebook.early import plain_cell


@pytest.fixture
def shell():
    sh = InteractiveShell.instance()
    yield sh
    sh.ast_transformers.clear()


@pytest.mark.parametrize("code, expected", [
    ("%%gpu\nx = 1", ("", "x = 1\n")),
    ("%%gpu\nx = 1\n", ("", "x = 1\n")),
    ("%%gpu --gpu A100 --keep-warm 5m\nfor i in range(3):\n    print(i)",
     ("--gpu A100 --keep-warm 5m", "for i in range(3):\n    print(i)\n")),
])
def test_a_plain_cell_is_split_as_ipython_hands_it_to_the_magic(shell, code, expected):
    assert plain_cell(code, shell) == expected
    # what IPython itself makes of the cell: run_cell_magic('gpu', line, body)
    call = ast.parse(shell.transform_cell(code)).body[0].value
    name, line, body = (ast.literal_eval(a) for a in call.args)
    assert (name, line.strip(), body) == ("gpu", *expected)


@pytest.mark.parametrize("code", [
    "x = 1",  # not a %%gpu cell
    "%%gpux\nx = 1",  # another magic
    "\n%%gpu\nx = 1",  # IPython strips the blank line first
    "  %%gpu\nx = 1",  # and the indent
    "%%gpu",  # no body: IPython refuses it
    "%%gpu\n\n",
    "%%gpu --keep-warm $kw\nx = 1",  # IPython expands the line as the magic runs
    "%%gpu --gpu {g}\nx = 1",
    "%%gpu\n>>> x = 1\n>>> y = 2",  # a pasted prompt IPython strips from the body
])
def test_a_cell_ipython_could_still_change_is_not_plain(shell, code):
    assert plain_cell(code, shell) is None


def test_hooks_and_transformers_that_run_before_the_magic_keep_a_cell_back(shell):
    assert plain_cell("%%gpu\nx = 1", shell) is not None

    def hook(info):
        pass

    shell.events.register("pre_run_cell", hook)
    try:
        assert plain_cell("%%gpu\nx = 1", shell) is None
    finally:
        shell.events.unregister("pre_run_cell", hook)
    shell.ast_transformers.append(ast.NodeTransformer())
    assert plain_cell("%%gpu\nx = 1", shell) is None


def test_a_cleanup_transform_added_later_is_applied_to_a_cell_seen_before(shell):
    """plain_cell remembers its answer per cell text: an extension that adds a cleanup transform
    which changes that text must still keep the cell back."""
    code = "%%gpu\nx = 1\n"
    assert plain_cell(code, shell) == ("", "x = 1\n")

    def doubles_the_body(lines):
        return lines + lines[1:]

    shell.input_transformer_manager.cleanup_transforms.append(doubles_the_body)
    try:
        assert plain_cell(code, shell) is None
    finally:
        shell.input_transformer_manager.cleanup_transforms.remove(doubles_the_body)
    assert plain_cell(code, shell) == ("", "x = 1\n")
