"""After `%%gpu` cells the kernel's namespace is what local cells would have left (issue 19).

Each scenario runs twice in one kernel, its names suffixed apart: first with its cells as `%%gpu`
cells (a cell marked local stays local: it looks at the kernel's namespace), then all as local
cells.  What each cell shows must be the same both ways.  Covered: modules a `%%gpu` cell imports
are bound in the kernel (`import a.b.c` too); names that refer to one object, to views of one
array, or to a figure and its axes stay so across cells, in the kernel and on the worker, in both
directions; a value changed in place on the worker is changed in place in the kernel, so a name
that was never sent sees it too.  And a module only the worker can import says so when used here,
and later `%%gpu` cells still use it.
"""
from __future__ import annotations

import pytest

from .differential import normalise
from .helpers import LOAD, stream_text

GPU, LOCAL = True, False

SCENARIOS = {
    # a notebook whose cells are all %%gpu ends with its imports in the kernel (email.mime.text:
    # a submodule the kernel has not imported: `import email.mime.text` binds `email` and needs it)
    "imports": [
        (GPU, "import numpy as np{s}\nimport pandas as pd{s}\nimport matplotlib.pyplot as plt{s}\n"
              "import sys as sys{s}, time as time{s}\nfrom os import path as path{s}\nimport email.mime.text"),
        (LOCAL, "import types\nprint(np{s}.zeros(3), isinstance(np{s}, types.ModuleType), repr(sys{s}))\n"
                "print(pd{s}.Series([1, 2]).sum(), plt{s}.__name__, type(time{s}.time()).__name__, path{s}.join('a', 'b'))\n"
                "print(email.mime.text.MIMEText('x').get_content_type())"),
        (GPU, "print(np{s}.ones(2), path{s}.basename('/x/y'), email.mime.text.__name__)"),
    ],
    # a view shares memory with its base: a change through it shows in the base
    "array-view": [
        (GPU, "import numpy\na{s} = numpy.zeros((3, 4))"),
        (GPU, "b{s} = a{s}[:2, :2]"),
        (GPU, "b{s}[0, 0] = 1"),
        (GPU, "print(a{s}[0])"),
        (LOCAL, "print(a{s}[0], b{s}[0], numpy.shares_memory(a{s}, b{s}))"),
        (GPU, "a{s}[0, 1] = 2\nprint(b{s}[0])"),
        (LOCAL, "b{s}[1, 1] = 3\nprint(a{s}[1])"),
        (GPU, "print(a{s}[1], b{s}[1], numpy.shares_memory(a{s}, b{s}))"),
    ],
    # an axes drawn on in a later cell is still its figure's
    "figure-axes": [
        (GPU, "import matplotlib.pyplot as plt\nfig{s}, ax{s} = plt.subplots()\nplt.close(fig{s})"),
        (GPU, "ax{s}.set_title('hello')"),
        (LOCAL, "print(fig{s}.axes[0].get_title(), ax{s}.figure is fig{s}, ax{s} in fig{s}.axes)"),
        (GPU, "print(fig{s}.axes[0].get_title(), ax{s}.figure is fig{s})"),
    ],
    # two names, one list, made by a %%gpu cell
    "one-list-two-names": [
        (GPU, "lst{s} = [0]\na{s} = b{s} = lst{s}"),
        (GPU, "a{s}.append(1)"),
        (LOCAL, "print(b{s}, a{s} is b{s}, lst{s} is a{s})"),
        (GPU, "b{s}.append(2)\nprint(a{s}, lst{s} is b{s})"),
        (LOCAL, "print(lst{s}, a{s} is b{s})"),
    ],
    # kernel -> worker: names the kernel made share on the worker too
    "local-names-shared-there": [
        (LOCAL, "k{s} = m{s} = []"),
        (GPU, "k{s}.append(1)\nprint(m{s})"),
        (LOCAL, "print(k{s}, m{s}, k{s} is m{s})"),
    ],
    # a name the cell does not read, sharing with one it changes in place, sees the change
    "unsent-alias": [
        (LOCAL, "import numpy\nx{s} = [0]\ny{s} = x{s}\nholder{s} = {{'x': x{s}}}\nbase{s} = numpy.zeros(4)\nv{s} = base{s}[1:3]"),
        (GPU, "x{s}.append(1)\nv{s}[:] = 7"),
        (LOCAL, "print(y{s}, holder{s}, base{s})"),
    ],
    # a view made here of an array the worker holds goes as a view of it; changed there, both change
    "view-of-held-array": [
        (LOCAL, "import numpy\nbig{s} = numpy.arange(8.0)"),
        (GPU, "print(big{s}.sum())"),
        (LOCAL, "part{s} = big{s}[2:4]"),
        (GPU, "part{s} *= 10\nprint(big{s})"),
        (LOCAL, "print(big{s}, part{s}, numpy.shares_memory(big{s}, part{s}))"),
    ],
}


def _notebook(scenarios: dict) -> tuple[list, dict]:
    """The sources, and per scenario the cells' indices of its %%gpu run and of its local run."""
    sources, where = [LOAD], {}
    for sid, cells in scenarios.items():
        runs = []
        for suffix, remote in (("_g", True), ("_l", False)):
            start = len(sources)
            for gpu, code in cells:
                text = code.format(s=suffix)
                sources.append(f"%%gpu\n{text}" if remote and gpu else text)
            runs.append(range(start, len(sources)))
        where[sid] = runs
    return sources, where


@pytest.fixture(scope="module")
def ran(kernel_env, tmp_path_factory):
    import nbformat
    from jupyter_gpu.ci.executor import NotebookClient

    sources, where = _notebook(SCENARIOS)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    client = NotebookClient(nb, kernel_name="python3", timeout=180, startup_timeout=120, allow_errors=True,
                            resources={"metadata": {"path": str(tmp_path_factory.mktemp("fidelity"))}})
    client.execute(env=kernel_env)
    return nb, where


@pytest.mark.timeout(600)
@pytest.mark.parametrize("sid", list(SCENARIOS))
def test_gpu_cells_leave_the_namespace_local_cells_would(ran, sid):
    nb, where = ran
    remote, local = where[sid]
    for i, j in zip(remote, local):
        shown_remote, shown_local = normalise(nb.cells[i]["outputs"]), normalise(nb.cells[j]["outputs"])
        assert shown_remote == shown_local, (
            f"{sid}: {nb.cells[i]['source']!r}\n  %%gpu run {shown_remote!r}\n  local run {shown_local!r}")
        assert not any(o["output_type"] == "error" for o in nb.cells[j]["outputs"]), nb.cells[j]["outputs"]


@pytest.mark.timeout(300)
def test_a_module_only_the_worker_can_import_says_so_here_and_stays_usable_there(run_notebook):
    nb = run_notebook([
        LOAD,
        "%%gpu\nimport os, sys, tempfile\nd = tempfile.mkdtemp()\n"
        "with open(os.path.join(d, 'only_on_the_worker.py'), 'w') as f:\n    f.write('X = 41')\n"
        "sys.path.insert(0, d)\nimport only_on_the_worker as ow",
        "print(repr(ow))\ntry:\n    ow.X\nexcept AttributeError as e:\n    print(e)",
        "%%gpu\nprint(ow.X + 1)",
        "print(type(os).__name__, sys.version_info[0] == 3)",
    ])
    assert stream_text(nb.cells[2]).startswith("<remote module 'only_on_the_worker'")
    why = stream_text(nb.cells[2]).splitlines()[1]
    assert "'ow'" in why and "cannot be used here" in why and "No module named 'only_on_the_worker'" in why
    assert stream_text(nb.cells[3]) == "42\n"
    assert stream_text(nb.cells[4]) == "module True\n"


@pytest.mark.timeout(300)
def test_a_view_comes_back_without_its_base_and_names_held_unchanged_are_not_sent_again(run_notebook):
    nb = run_notebook([
        LOAD,
        "%%gpu\nimport numpy\nbig = numpy.zeros(1 << 20)",  # 8 MiB
        "%%gpu\npart = big[10:20]",
        "import jupyter_gpu\nt = jupyter_gpu.last_cell()['transfer']\n"
        "print(t['received_bytes'] < 65536, numpy.shares_memory(big, part))",
        "%%gpu\nprint(part.sum(), big.sum())",
        "t = jupyter_gpu.last_cell()['transfer']\nprint(t['sent_bytes'] < 65536)",
        "part[0] = 5",  # a change here, through the view: big changed too, and goes again
        "%%gpu\nprint(big[10], part[0])",
        "t = jupyter_gpu.last_cell()['transfer']\nprint(t['sent_bytes'] >= 8 << 20)",
    ])
    assert [stream_text(nb.cells[i]) for i in (3, 4, 5, 7, 8)] == [
        "True True\n", "0.0 0.0\n", "True\n", "5.0 5.0\n", "True\n"]


@pytest.mark.timeout(300)
def test_a_module_the_cell_rewrites_beside_the_notebook_is_bound_as_the_cell_left_it(run_notebook):
    # the kernel imports the modules a %%gpu cell imports while the worker runs it (prefetch.py),
    # but never the notebook's own files: the cell may be changing them, as this one does
    nb = run_notebook([
        LOAD,
        "import pathlib\npathlib.Path('rewritten_beside.py').write_text('V = 1\\n')",
        "%%gpu\nimport importlib, pathlib, time\ntime.sleep(0.3)\npathlib.Path('rewritten_beside.py').write_text('V = 22\\n')\n"
        "importlib.invalidate_caches()\nimport rewritten_beside\nprint(rewritten_beside.V)",
        "print(rewritten_beside.V)",
    ])
    assert stream_text(nb.cells[2]) == "22\n"
    assert stream_text(nb.cells[3]) == "22\n"


@pytest.mark.timeout(300)
def test_a_with_target_is_the_cells_own_not_the_kernels(run_notebook):
    # a local cell leaves a closed file in `f`; a %%gpu cell's `with open(...) as f:` binds its own
    # `f` before using it, so the kernel's (which cannot be sent) is not an input, as locally
    nb = run_notebook([
        LOAD,
        "with open('with_target.txt', 'w') as f:\n    f.write('kept')",
        "%%gpu\nwith open('with_target.txt') as f:\n    print(f.read())\nprint(f.closed)",
        "print(type(f).__name__)",  # (a closed file cannot come back: it stays on the worker)
    ])
    assert stream_text(nb.cells[2]) == "kept\nTrue\n"
    assert stream_text(nb.cells[3]) == "RemoteValue\n"
