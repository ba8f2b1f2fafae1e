"""`%load_ext jupyter_gpu` + `%%gpu`: the body runs on a worker process, and `--help` documents the options."""
from __future__ import annotations

import pytest

from .helpers import LOAD, stream_text, strip_ansi, user_outputs


@pytest.mark.timeout(180)
def test_gpu_cell_runs_in_a_worker_process_not_the_kernel(run_notebook):
    nb = run_notebook(
        [
            "import os\nprint(os.getpid())",
            LOAD,
            "%%gpu\nimport os\nprint(os.getpid())",
            "print(os.getpid())",
        ]
    )
    kernel_pid = int(stream_text(nb.cells[0]).strip())
    worker_pid = int(stream_text(nb.cells[2]).strip())
    kernel_pid_after = int(stream_text(nb.cells[3]).strip())
    assert kernel_pid == kernel_pid_after
    assert worker_pid != kernel_pid, "the %%gpu body ran inside the notebook kernel itself"


@pytest.mark.timeout(120)
def test_gpu_help_lists_the_documented_options(run_notebook):
    nb = run_notebook([LOAD, "%%gpu --help\npass"])
    cell = nb.cells[1]
    text = strip_ansi(
        "".join(
            o.get("text", "") if o["output_type"] == "stream" else o.get("data", {}).get("text/plain", "")
            for o in user_outputs(cell)
        )
    )
    for option in ("--gpu", "--in", "--out", "--no-out"):
        assert option in text, f"{option} missing from %%gpu --help output:\n{text}"
