"""The notebook's directory on a worker that cannot see it (issue 21, the other-filesystem part):
synced, content-addressed, both ways.

The backend here is configured as "not the same filesystem" (``JUPYTER_GPU_FILES=sync``): its
workers never enter the kernel's directory, they get a mirror of it (notebook/files.py,
worker mirror.py).  Each test runs real kernels on that real embedded backend and looks at what a
user sees: what a cell reads, what appears beside the notebook, the footer's "synced" line,
the messages of the size cap and of a conflict.
"""
from __future__ import annotations

import os

import pytest

from tests.conftest import FOOTER_MIME, LiveKernel, make_kernel_env, strip_ansi

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def sync_env(tmp_path_factory):
    d = tmp_path_factory.mktemp("sync-runtime")
    env = make_kernel_env(d)
    env["JUPYTER_GPU_FILES"] = "sync"  # the backend's workers: another filesystem
    yield env
    from tests.conftest import _reap_backend

    _reap_backend(d)


def _footer_text(cell) -> str:
    return "".join(e.msg["content"]["data"].get("text/plain", "") for e in cell.iopub
                   if e.msg["msg_type"] == "display_data" and FOOTER_MIME in e.msg["content"]["data"])


def _error(cell) -> str:
    return strip_ansi("\n".join(cell.reply["content"].get("traceback", [])) + cell.reply["content"].get("evalue", ""))


def test_files_go_to_the_worker_and_come_back_and_unchanged_costs_nothing(sync_env, tmp_path):
    (tmp_path / "data.csv").write_text("x\n1\n2\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.txt").write_text("inside sub\n")
    k = LiveKernel.beside(tmp_path, sync_env)
    try:
        cell = k.run("%%gpu\nimport os\nprint(open('data.csv').read().split(), os.getcwd() != "
                     f"{str(tmp_path)!r}, os.path.basename(os.getcwd()))")
        # the worker read the file from its own copy (not the kernel's directory itself)
        assert cell.stdout() == f"['x', '1', '2'] True {tmp_path.name}\n"
        files = cell.footers()[-1]["files"]
        assert files["in"] == 2 and files["out"] == 0 and files["bytes"] == 6 + 11
        assert "synced 2 files in, 0 out, 17 B" in _footer_text(cell)
        # an unchanged directory: nothing moves, the footer says nothing of files
        cell = k.run("%%gpu\nprint(len(open('data.csv').read()))")
        assert cell.stdout() == "6\n" and "files" not in cell.footers()[-1]
        # a file written by the cell appears beside the notebook; a changed one is changed here
        cell = k.run("%%gpu\nopen('out.txt', 'w').write('from the worker')\n"
                     "open('data.csv', 'a').write('3\\n')\nimport os\nos.remove('sub/inner.txt')")
        assert (tmp_path / "out.txt").read_text() == "from the worker"
        assert (tmp_path / "data.csv").read_text() == "x\n1\n2\n3\n"
        assert not (tmp_path / "sub" / "inner.txt").exists()
        files = cell.footers()[-1]["files"]
        assert files == {"in": 0, "out": 3, "bytes": len("from the worker") + 8}
        # a local edit reaches the next cell
        (tmp_path / "data.csv").write_text("y\n")
        assert k.run("%%gpu\nprint(open('data.csv').read(), end='')").stdout() == "y\n"
        assert k.run("%%gpu\nprint(open('out.txt').read())").stdout() == "from the worker\n"
    finally:
        k.shutdown()


def test_two_kernels_in_two_folders_see_only_their_own_files(sync_env, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "data.csv").write_text(f"x\n{folder.name}\n")
    (a / "only_a.txt").write_text("a's")
    ka, kb = LiveKernel.beside(a, sync_env), LiveKernel.beside(b, sync_env)
    try:
        for _ in range(2):  # interleaved, on one backend
            for k, name in ((ka, "a"), (kb, "b")):
                cell = k.run("%%gpu\nimport os\nprint(open('data.csv').read().split()[1], os.path.exists('only_a.txt'))")
                assert cell.stdout() == f"{name} {name == 'a'}\n"
    finally:
        ka.shutdown()
        kb.shutdown()


def test_cd_and_chdir_follow_the_cell_through_the_mirror(sync_env, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.txt").write_text("inside sub\n")
    k = LiveKernel.beside(tmp_path, sync_env)
    try:
        k.run("%cd sub")
        assert k.run("%%gpu\nprint(open('inner.txt').read(), end='')").stdout() == "inside sub\n"
        k.run("%%gpu\nimport os\nos.chdir('..')")  # the kernel follows to its own path
        assert k.run("import os\nprint(os.getcwd())").stdout() == f"{tmp_path}\n"
        assert k.run("%%gpu\nimport os\nprint(sorted(os.listdir('.')))").stdout() == "['sub']\n"
    finally:
        k.shutdown()


def test_local_modules_import_reload_and_go_by_value_from_outside(sync_env, tmp_path):
    proj, lib = tmp_path / "proj", tmp_path / "lib"
    (proj / "src").mkdir(parents=True)
    lib.mkdir()
    (proj / "helper.py").write_text("def load():\n    return 'v1'\nclass Point:\n    def __init__(self, x):\n"
                                    "        self.x = x\n")
    (proj / "src" / "pkgmod.py").write_text("NAME = 'from src'\n")
    (lib / "faraway.py").write_text("def double(x):\n    return 2 * x\nclass Box:\n    def __init__(self, v):\n"
                                    "        self.v = v\n")
    k = LiveKernel.beside(proj, sync_env)
    try:
        assert k.run("%%gpu\nimport helper\nprint(helper.load())").stdout() == "v1\n"
        k.run("import helper\np = helper.Point(7)")
        assert k.run("%%gpu\nprint(type(p).__name__, p.x)").stdout() == "Point 7\n"
        (proj / "helper.py").write_text("def load():\n    return 'v2'\n")
        assert k.run("%%gpu\nimport importlib\nimportlib.reload(helper)\nprint(helper.load())").stdout() == "v2\n"
        # a sys.path entry inside the directory
        k.run("import sys\nsys.path.append('src')")
        assert k.run("%%gpu\nimport pkgmod\nprint(pkgmod.NAME)").stdout() == "from src\n"
        # a module outside it: its function, class and instance go with their code
        k.run(f"import sys\nsys.path.insert(0, {str(lib)!r})\nfrom faraway import double, Box\nb = Box(21)")
        assert k.run("%%gpu\nprint(double(b.v), type(b).__name__)").stdout() == "42 Box\n"
        # importing it there fails, saying where the kernel has it and what to do
        cell = k.run("%%gpu\nimport faraway", ok=False)
        assert "ModuleNotFoundError" in _error(cell)
        said = cell.stderr()
        assert "'faraway'" in said and str(lib / "faraway.py") in said and "move it under" in said
    finally:
        k.shutdown()


def test_ignored_files_are_not_sent(sync_env, tmp_path):
    (tmp_path / ".gitignore").write_text("secret.bin\nbuild/\n")
    (tmp_path / ".jupyter-gpu-ignore").write_text("*.ckpt\n")
    for name in ("secret.bin", "model.ckpt", "kept.txt"):
        (tmp_path / name).write_text(name)
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "x.o").write_text("obj")
    k = LiveKernel.beside(tmp_path, sync_env)
    try:
        cell = k.run("%%gpu\nimport os\nprint(sorted(n for n in os.listdir('.') if not n.startswith('.')))")
        assert cell.stdout() == "['kept.txt']\n"
    finally:
        k.shutdown()


def test_a_directory_over_the_limit_fails_before_sending_naming_the_biggest(sync_env, tmp_path):
    (tmp_path / "big.bin").write_bytes(os.urandom(300_000))
    (tmp_path / "small.txt").write_text("s")
    k = LiveKernel.beside(tmp_path, sync_env)
    try:
        k.run("%env JUPYTER_GPU_SYNC_LIMIT=200KiB")
        cell = k.run("%%gpu\nprint('ran')", ok=False)
        err = _error(cell)
        assert "FilesTooLarge" in err and "big.bin" in err and "JUPYTER_GPU_SYNC_LIMIT" in err
        assert cell.stdout() == ""  # nothing ran
        k.run("%env JUPYTER_GPU_SYNC_LIMIT=1MiB")
        assert k.run("%%gpu\nprint('ran')").stdout() == "ran\n"
        # it grows past the limit once synced (its watched manifest says so): the next cell fails too
        (tmp_path / "bigger.bin").write_bytes(os.urandom(900_000))
        cell = k.run("%%gpu\nprint('ran')", ok=False)
        err = _error(cell)
        assert "FilesTooLarge" in err and "bigger.bin" in err and cell.stdout() == ""
    finally:
        k.shutdown()


def test_a_file_changed_here_while_the_cell_ran_is_kept_and_the_cells_beside_it(sync_env, tmp_path):
    (tmp_path / "notes.txt").write_text("original\n")
    k = LiveKernel.beside(tmp_path, sync_env)
    try:
        k.run("%%gpu\nprint(open('notes.txt').read(), end='')")
        # the cell changes its copy while "someone" edits the kernel's (this host's path, as a
        # second editor would: deterministic, no waiting)
        cell = k.run(f"%%gpu\nopen('notes.txt', 'w').write('cell\\n')\nopen({str(tmp_path / 'notes.txt')!r}, 'w')"
                     ".write('local edit\\n')")
        assert (tmp_path / "notes.txt").read_text() == "local edit\n"
        assert (tmp_path / "notes.remote.txt").read_text() == "cell\n"
        assert "notes.txt changed here while the cell ran" in cell.stderr()
        assert "notes.remote.txt" in cell.stderr()
        # the next cell sees the kernel's version (and the kept one)
        assert k.run("%%gpu\nprint(open('notes.txt').read(), open('notes.remote.txt').read(), end='')").stdout() \
            == "local edit\n cell\n"
    finally:
        k.shutdown()


def test_environment_the_notebook_set_reaches_the_cell_and_unset_leaves_it(sync_env, tmp_path):
    k = LiveKernel.beside(tmp_path, sync_env)
    try:
        k.run("%env API_KEY=abc123")
        assert k.run("%%gpu\nimport os\nprint(os.environ.get('API_KEY'))").stdout() == "abc123\n"
        k.run("import os\ndel os.environ['API_KEY']")
        assert k.run("%%gpu\nimport os\nprint(os.environ.get('API_KEY'))").stdout() == "None\n"
    finally:
        k.shutdown()


def test_a_workers_mirror_is_removed_when_it_exits_and_when_it_is_killed(sync_env, tmp_path):
    import glob
    import tempfile

    (tmp_path / "data.csv").write_text("x\n")
    k = LiveKernel.beside(tmp_path, sync_env)

    def mirrors(worker: str) -> list:
        return glob.glob(f"{tempfile.gettempdir()}/jupyter-gpu-files-{worker}-*")

    try:
        worker = k.run("%%gpu\nimport os\nprint(os.environ['JUPYTER_GPU_WORKER_ID'])").stdout().strip()
        assert mirrors(worker)
        k.run("%gpu release")  # it exits (os._exit): its mirrors go with it
        assert k.wait_until(lambda: not mirrors(worker), 30)
        worker = k.run("%%gpu\nimport os\nprint(os.environ['JUPYTER_GPU_WORKER_ID'])").stdout().strip()
        assert mirrors(worker)
        k.run("%%gpu\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)", ok=False)  # no clean-up of its own
        assert k.wait_until(lambda: not mirrors(worker), 30)  # its runtime removed what it left
    finally:
        k.shutdown()


def test_a_large_directory_is_written_on_the_worker_as_it_arrives_byte_for_byte(sync_env, tmp_path):
    """Over filestream.STREAM_MIN (32 MiB): read by the kernel as it is sent, written by the worker as
    it arrives, through a window of buffers smaller than the directory (both sides)."""
    import xxhash

    files = {f"big/{i}.bin": os.urandom(4_500_000 + i) for i in range(9)}  # 40 MB: each over a buffer
    files.update({f"small/{i:03}.txt": os.urandom(1000 + i) for i in range(300)})
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    digest = lambda items: xxhash.xxh3_64_hexdigest(b"".join(r.encode() + d for r, d in sorted(items)))  # noqa: E731
    code = ("%%gpu\nimport os, xxhash\nitems = []\nfor top, _, names in os.walk('.'):\n    for n in names:\n"
            "        p = os.path.join(top, n)\n        items.append((os.path.relpath(p), open(p, 'rb').read()))\n"
            "print(len(items), xxhash.xxh3_64_hexdigest(b''.join(r.encode() + d for r, d in sorted(items))))")
    k = LiveKernel.beside(tmp_path, sync_env)
    try:
        cell = k.run(code)
        assert cell.stdout() == f"{len(files)} {digest(files.items())}\n"
        assert cell.footers()[-1]["files"]["in"] == len(files)
        files["big/3.bin"] = os.urandom(4_500_000)  # then a change: a small delta, packed as before
        (tmp_path / "big/3.bin").write_bytes(files["big/3.bin"])
        cell = k.run(code)
        assert cell.stdout() == f"{len(files)} {digest(files.items())}\n"
        assert cell.footers()[-1]["files"]["in"] == 1
    finally:
        k.shutdown()


def test_a_function_called_beside_a_directory_gets_its_arguments_and_the_files(sync_env, tmp_path):
    """A call's function and arguments go after the sync's files were packed: the worker kept them
    while it let go of each file written (a small sync: 'a bytes-like object is required, not
    NoneType'), and a large one, read as it is sent, had the call's buffer numbers."""
    for size, name in ((2_000, "small"), (40_000_000, "large")):  # under and over filestream.STREAM_MIN
        d = tmp_path / name
        d.mkdir()
        data = os.urandom(size)
        (d / "data.bin").write_bytes(data)
        k = LiveKernel.beside(d, sync_env)
        try:
            k.run("import jupyter_gpu\n@jupyter_gpu.function\ndef sized(x):\n    return x + 1, len(open('data.bin', 'rb').read())")
            assert k.run("print(sized.remote(41))").stdout() == f"(42, {size})\n", name
        finally:
            k.shutdown()
