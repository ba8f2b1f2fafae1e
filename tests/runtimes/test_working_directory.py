"""A `%%gpu` cell runs in its kernel's working directory and sees it live, on every runtime (issue 21,
same filesystem): files beside the notebook read and written (by the directory's owner), `%cd`, a
module beside the notebook.  On `docker` that is the bind mount of the cold-starting cell's directory
(backend/jupyter_gpu_backend/runtimes/docker_mounts.py); `local` and `ray` (one node, this host) see
the host's files as they are.

The runtimes' fixtures are tests/runtimes/conftest.py's (one backend and one kernel per runtime, for
this module).  Each test puts the kernel in a folder of its own (``notebook``: as a kernel started
beside its notebook) and cold-starts its worker from there; afterwards the kernel goes back and lets
that worker go.
"""
from __future__ import annotations

import base64
import hashlib
import os
import shutil
import zipfile

import pytest

pytestmark = pytest.mark.timeout(600)  # one image build (docker) or cluster start (ray) may fall in the first test

OTHER_UID = 4321  # an owner that is neither root nor the worker image's own user (1000)


def _move(kernel, folder) -> None:
    """The kernel goes to ``folder`` and lets its workers go: the next cell cold-starts there."""
    kernel.run(f"import os\nos.chdir({str(folder)!r})")
    kernel.run("%gpu release")


@pytest.fixture
def notebook(kernel, tmp_path):
    """A folder the kernel works in, its worker cold-started from there."""
    home = kernel.run("import os\nprint(os.getcwd())").stdout().strip()
    folder = tmp_path / "notebook"
    folder.mkdir()
    _move(kernel, folder)
    yield folder
    _move(kernel, home)


def is_where(runtime, seen: str, path) -> bool:
    """Whether ``seen`` on the worker is the kernel's ``path``: that path itself, or (synced) its
    mirror, another directory whose path ends with the kernel's own."""
    return seen != str(path) and seen.endswith(str(path)) if runtime.synced else seen == str(path)


def test_a_cell_reads_a_file_beside_its_notebook(kernel, runtime, notebook):
    (notebook / "data.csv").write_text("x\n42\n")
    cell = kernel.run("%%gpu\nimport os\nprint(open('data.csv').read().split()[1], os.getcwd())")
    value, cwd = cell.stdout().split()
    assert value == "42" and is_where(runtime, cwd, notebook)
    assert cell.stderr() == ""  # nothing said about a directory the worker does not see


def test_a_file_the_cell_writes_is_beside_the_notebook_at_once_and_its_owners(kernel, notebook):
    kernel.run("%%gpu\nwith open('out.txt', 'w') as f:\n    f.write('from the worker')")
    out = notebook / "out.txt"
    assert out.read_text() == "from the worker"  # no sync: there as the cell ends
    # the directory's owner's, as a local cell's file (not the worker image's uid 1000)
    assert (out.stat().st_uid, out.stat().st_gid) == (notebook.stat().st_uid, notebook.stat().st_gid)


def test_cd_into_a_subfolder_then_a_relative_read_and_back(kernel, notebook):
    (notebook / "sub").mkdir()
    (notebook / "sub" / "inner.txt").write_text("inside sub\n")
    kernel.run("%cd sub")  # a local cell: the next %%gpu cell starts there
    assert kernel.run("%%gpu\nprint(open('inner.txt').read(), end='')").stdout() == "inside sub\n"
    kernel.run("%%gpu\nimport os\nos.chdir('..')")  # on the worker: the kernel follows
    assert kernel.run("import os\nprint(os.getcwd())").stdout() == f"{notebook}\n"
    assert kernel.run("%%gpu\nimport os\nprint(sorted(os.listdir()))").stdout() == "['sub']\n"


def test_a_module_beside_the_notebook_imports_on_the_worker(kernel, runtime, notebook):
    (notebook / "wd_helper.py").write_text("def load():\n    return 'v1'\n")
    cell = kernel.run("%%gpu\nimport wd_helper\nprint(wd_helper.load(), wd_helper.__file__)")
    value, file = cell.stdout().split()
    assert value == "v1" and is_where(runtime, file, notebook / "wd_helper.py")


def test_a_local_module_edited_and_reloaded_and_an_instance_of_its_class_sent(kernel, notebook):
    (notebook / "wd_shapes.py").write_text("VERSION = 1\nclass Point:\n    def __init__(self, x):\n        self.x = x\n")
    kernel.run("import wd_shapes\np = wd_shapes.Point(7)")  # made here, sent by reference to the module
    assert kernel.run("%%gpu\nprint(type(p).__name__, p.x, wd_shapes.VERSION)").stdout() == "Point 7 1\n"
    # (another size: a same-size edit within the second of the import would keep Python's own .pyc
    # valid - its check is size and whole-second mtime - on the worker as in a local kernel)
    (notebook / "wd_shapes.py").write_text("VERSION = 22\nclass Point:\n    def __init__(self, x):\n        self.x = x\n")
    cell = kernel.run("%%gpu\nimport importlib\nimportlib.reload(wd_shapes)\nprint(wd_shapes.VERSION)")
    assert cell.stdout() == "22\n"  # the file as it is now, on the worker


def test_two_kernels_in_two_folders_each_see_their_own(kernel, runtime, notebook, tmp_path):
    from tests.conftest import LiveKernel, make_kernel_env
    from tests.e2e.helpers import LOAD

    other = tmp_path / "other"
    other.mkdir()
    (notebook / "which.txt").write_text("first")
    (other / "which.txt").write_text("second")
    env = make_kernel_env(tmp_path / "second-kernel")
    env.update(JUPYTER_GPU_URL=runtime.url, JUPYTER_GPU_TOKEN=runtime.token)
    second = LiveKernel(env)
    try:
        second.run(f"import os\nos.chdir({str(other)!r})\n{LOAD}")
        for _ in range(2):  # interleaved, one backend
            assert kernel.run("%%gpu\nprint(open('which.txt').read())").stdout() == "first\n"
            assert second.run("%%gpu\nprint(open('which.txt').read())").stdout() == "second\n"
    finally:
        second.shutdown()


def test_another_directory_at_the_kernels_path_is_not_used_the_kernels_is_synced(kernel, runtime, notebook, tmp_path):
    """A path can name another directory on the worker (a container's own /tmp is not the host's):
    the worker tells them apart by the directory's identity (st_dev, st_ino), which a bind mount
    keeps, and gets the kernel's directory synced instead (notebook/files.py)."""
    other = f"/tmp/jgpu-other-{tmp_path.name}"
    kernel.run("%%gpu\npass")  # the worker, started from the notebook's folder
    if runtime.in_container:  # a directory of the container's own at that path, with its own data.csv
        kernel.run(f"%%gpu\nimport os\nos.makedirs({other!r})\nopen({other!r} + '/data.csv', 'w').write('the container')")
    os.makedirs(other)
    try:
        with open(f"{other}/data.csv", "w") as f:
            f.write("the host")
        kernel.run(f"import os\nos.chdir({other!r})")
        cell = kernel.run("%%gpu\nprint(open('data.csv').read())")
        assert (cell.stdout(), cell.stderr()) == ("the host\n", "")
        synced = "files" in cell.footers()[-1]
        assert synced == (runtime.in_container or runtime.synced)  # a worker on this host sees /tmp itself
    finally:
        kernel.run(f"import os\nos.chdir({str(notebook)!r})")
        shutil.rmtree(other, ignore_errors=True)


def _wheel(folder, name: str = "wd_tiny", version: str = "0.1"):
    """A pure-Python wheel, made here: `pip install` needs no index and no build."""
    info = f"{name}-{version}.dist-info"
    files = {f"{name}.py": "VALUE = 'installed'\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}

    def digest(text: str) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()

    record = "".join(f"{p},sha256={digest(t)},{len(t.encode())}\n" for p, t in files.items()) + f"{info}/RECORD,,\n"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for p, t in {**files, f"{info}/RECORD": record}.items():
            z.writestr(p, t)
    return path


def test_a_container_runs_as_the_owner_of_the_kernels_directory_and_pip_install_works(kernel, runtime, tmp_path):
    """Owned by another user (neither root nor the image's 1000): the container's code is that user,
    what it writes is theirs, and `!pip install` still installs into the worker's venv."""
    if not runtime.in_container:
        pytest.skip("a local or ray worker is the backend's own user on this host")
    if os.getuid() != 0:
        pytest.skip("giving a folder to another user needs root")
    home = kernel.run("import os\nprint(os.getcwd())").stdout().strip()
    folder = tmp_path / "theirs"
    folder.mkdir()
    wheel = _wheel(folder)
    os.chown(folder, OTHER_UID, OTHER_UID)
    _move(kernel, folder)
    try:
        cell = kernel.run("%%gpu\nimport os, getpass\nprint(os.getuid(), os.getgid(), getpass.getuser())\n"
                          "open('made.txt', 'w').write('x')")
        assert cell.stdout() == f"{OTHER_UID} {OTHER_UID} {OTHER_UID}\n"  # no such user here: named by uid
        assert "files" not in cell.footers()[-1], cell.stderr()  # the directory itself (mounted), not synced
        made = (folder / "made.txt").stat()
        assert (made.st_uid, made.st_gid) == (OTHER_UID, OTHER_UID)
        cell = kernel.run(f"%%gpu\n!pip install -q --no-index {wheel.name}\nimport wd_tiny\nprint(wd_tiny.VALUE)",
                          timeout=180)
        assert cell.stdout().endswith("installed\n"), cell.stdout() + cell.stderr()
    finally:
        _move(kernel, home)
