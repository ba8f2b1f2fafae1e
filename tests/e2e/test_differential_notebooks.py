"""Whole notebooks of many small cells (benchmarks/notebooks: a numpy, a pandas and a matplotlib
chapter) show the same outputs, cell by cell, run locally and run with every code cell `%%gpu`:
the names, imports and shared objects each cell leaves behind carry the next cells as locally."""
from __future__ import annotations

from pathlib import Path

import pytest

from .differential import normalise
from .helpers import LOAD

CHAPTERS = sorted((Path(__file__).resolve().parents[2] / "benchmarks" / "notebooks").glob("*.ipynb"))


def _run(cells: list, env: dict, path: str):
    import nbformat
    from jupyter_gpu.ci.executor import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(s) for s in cells]
    NotebookClient(nb, kernel_name="python3", timeout=180, startup_timeout=120, allow_errors=True,
                   resources={"metadata": {"path": path}}).execute(env=env)
    return nb


@pytest.mark.timeout(600)
@pytest.mark.parametrize("chapter", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_a_chapter_shows_the_same_outputs_with_every_cell_remote(chapter, kernel_env, tmp_path):
    import nbformat

    code = [c.source for c in nbformat.read(chapter, as_version=4).cells if c.cell_type == "code"]
    assert len(code) >= 10, f"{chapter.name}: a chapter of many small cells"
    local = _run(code, kernel_env, str(tmp_path))
    remote = _run([LOAD] + ["%%gpu\n" + c for c in code], kernel_env, str(tmp_path))
    for i, source in enumerate(code):
        want, got = normalise(local.cells[i]["outputs"]), normalise(remote.cells[i + 1]["outputs"])
        assert got == want, f"{chapter.stem} cell {i}: {source!r}\n local {want!r}\n %%gpu {got!r}"
