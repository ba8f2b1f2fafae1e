"""A `%%gpu` cell runs in its kernel's working directory (issue 21, the same-filesystem part): files
and modules beside the notebook, `%cd` and `os.chdir` both ways, two kernels in two folders sharing
one backend, each seeing only its own files."""
from __future__ import annotations

import os
import textwrap

import pytest

from tests.conftest import LiveKernel

pytestmark = pytest.mark.timeout(240)


def test_two_kernels_in_two_folders_read_their_own_files(kernel_env, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "data.csv").write_text(f"x\n{folder.name}\n")
    ka, kb = LiveKernel.beside(a, kernel_env), LiveKernel.beside(b, kernel_env)
    try:
        for _ in range(2):  # interleaved, on one backend
            for k, name in ((ka, "a"), (kb, "b")):
                cell = k.run("%%gpu\nimport os\nprint(open('data.csv').read().split()[1], os.getcwd())")
                assert cell.stdout() == f"{name} {tmp_path / name}\n"
    finally:
        ka.shutdown()
        kb.shutdown()


def test_files_modules_and_directory_changes_follow_the_cell(kernel_env, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.txt").write_text("inside sub\n")
    (tmp_path / "helper.py").write_text("def load():\n    return 'v1'\nclass Point:\n    def __init__(self, x):\n"
                                        "        self.x = x\n")
    k = LiveKernel.beside(tmp_path, kernel_env)
    try:
        # a module beside the notebook, and an instance of its class made here
        assert k.run("%%gpu\nimport helper\nprint(helper.load())").stdout() == "v1\n"
        assert k.run("import helper\np = helper.Point(7)").reply["content"]["status"] == "ok"
        assert k.run("%%gpu\nprint(type(p).__name__, p.x)").stdout() == "Point 7\n"
        # edited, then reloaded in a %%gpu cell: the worker's copy is the file as it is now
        (tmp_path / "helper.py").write_text("def load():\n    return 'v2'\n")
        assert k.run("%%gpu\nimport importlib\nimportlib.reload(helper)\nprint(helper.load())").stdout() == "v2\n"
        # a file the cell writes is beside the notebook at once
        k.run("%%gpu\nopen('written.txt', 'w').write('from the worker')")
        assert (tmp_path / "written.txt").read_text() == "from the worker"
        # %cd here: the next %%gpu cell starts there
        k.run("%cd sub")
        assert k.run("%%gpu\nprint(open('inner.txt').read(), end='')").stdout() == "inside sub\n"
        # os.chdir in a %%gpu cell: later cells, local ones too, start from where it went
        k.run("%%gpu\nimport os\nos.chdir('..')")
        assert k.run("import os\nprint(os.getcwd())").stdout() == f"{tmp_path}\n"
        assert k.run("%%gpu\nimport os\nprint(os.getcwd())").stdout() == f"{tmp_path}\n"
    finally:
        k.shutdown()


def test_a_relative_image_displays_as_locally(kernel_env, tmp_path):
    import base64

    png = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
    (tmp_path / "dot.png").write_bytes(png)
    k = LiveKernel.beside(tmp_path, kernel_env)
    try:
        code = textwrap.dedent("""\
            from IPython.display import Image, display
            display(Image('dot.png'))""")
        shown = [[e.msg["content"]["data"].get("image/png") for e in cell.iopub if e.msg["msg_type"] == "display_data"
                  and "image/png" in e.msg["content"]["data"]] for cell in (k.run(code), k.run("%%gpu\n" + code))]
        assert shown[0] and shown[0] == shown[1]
    finally:
        k.shutdown()
    assert os.path.exists(tmp_path / "dot.png")
