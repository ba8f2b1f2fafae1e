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


@pytest.mark.timeout(180)
def test_a_cell_magic_under_gpu_runs_on_the_worker_as_it_would_locally(run_notebook):
    nb = run_notebook([
        LOAD,
        "base = 10",
        "%%gpu\n%%time\ny = base * 2\ny",  # %%time times the remote run; its body's names travel
        "print(y)",
        "%%gpu\n%%bash\necho hi from bash",
        "%%gpu\n%%capture cap\nprint('hidden')",  # the name %%capture's line binds comes back
        "print(repr(cap.stdout))",
    ])
    timed = nb.cells[2]
    assert "Wall time" in stream_text(timed)
    assert [o["data"]["text/plain"] for o in timed.outputs if o["output_type"] == "execute_result"] == ["20"]
    assert stream_text(nb.cells[3]) == "20\n"
    assert stream_text(nb.cells[4]) == "hi from bash\n"
    assert stream_text(nb.cells[5]) == ""  # captured on the worker, not shown
    assert stream_text(nb.cells[6]) == "'hidden\\n'\n"


@pytest.mark.timeout(120)
def test_a_limit_that_is_not_above_zero_is_refused_saying_why(run_notebook):
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError) as e:
        run_notebook([LOAD, "%%gpu --max-cost -1\nx = 1"])
    assert "argument --max-cost: invalid positive number value: '-1'" in strip_ansi(str(e.value))
