"""Output of a %%gpu cell streams back live, byte for byte, complete and in order."""
from __future__ import annotations

import pytest

from .helpers import LOAD, stream_text


@pytest.mark.timeout(180)
def test_prints_arrive_live_while_the_cell_runs(live_kernel):
    live_kernel.run(LOAD)
    # Warm the worker so the timed cell measures streaming, not the cold start.
    live_kernel.run("%%gpu\nwarm = 1")
    code = "%%gpu\nimport time\nfor i in range(3):\n    print(f'line {i}')\n    time.sleep(1)\n"
    cell = live_kernel.run(code, timeout=60)

    assert cell.stdout() == "line 0\nline 1\nline 2\n"

    # When did each line become visible?
    arrived: dict[str, float] = {}
    seen = ""
    for ev in cell.streams("stdout"):
        seen += ev.msg["content"]["text"]
        for i in range(3):
            if f"line {i}\n" in seen and f"line {i}" not in arrived:
                arrived[f"line {i}"] = ev.t
    assert set(arrived) == {"line 0", "line 1", "line 2"}

    for ev in cell.streams("stdout"):
        assert ev.t < cell.reply_at, "a stream message arrived after the cell's execute_reply"
    spread = arrived["line 2"] - arrived["line 0"]
    assert spread >= 1.5, f"lines arrived in a burst ({spread:.2f}s apart), not live"
    # The last line is printed ~1 s before the cell ends; it must show up before the end.
    assert cell.reply_at - arrived["line 2"] >= 0.5, "the last line only arrived with the end of the cell"


@pytest.mark.timeout(120)
def test_carriage_return_progress_is_kept_unchanged(run_notebook):
    nb = run_notebook(
        [
            LOAD,
            "%%gpu\nfor i in range(3):\n    print(f'progress {i}', end='\\r')\nprint('done')",
        ]
    )
    assert stream_text(nb.cells[1]) == "progress 0\rprogress 1\rprogress 2\rdone\n"


@pytest.mark.timeout(240)
def test_ten_thousand_lines_arrive_complete_and_in_order(run_notebook):
    nb = run_notebook([LOAD, "%%gpu\nfor i in range(10000):\n    print(i)"], timeout=180)
    text = stream_text(nb.cells[1])
    lines = text.split("\n")
    assert lines[-1] == ""
    lines = lines[:-1]
    assert len(lines) == len(set(lines)), "duplicated lines"
    assert lines == [str(i) for i in range(10000)]
    assert stream_text(nb.cells[1], "stderr") == ""


@pytest.mark.timeout(120)
def test_what_a_thread_prints_after_its_cell_ended_shows_in_the_next_gpu_cell(run_notebook):
    """ipykernel shows it in the cell running then; it used to be dropped on a worker.  The
    thread prints once the worker has sent the cell's end (its emitter's `end`, wrapped here)."""
    start = ("%%gpu\nimport threading\nem = get_ipython().emitter\n_end, ended = em.end, threading.Event()\n"
             "def _ending(*a, **k):\n    _end(*a, **k)\n    ended.set()\nem.end = _ending\n"
             "printed = threading.Event()\n"
             "def later():\n    if ended.wait(30):\n        print('late, from a thread')\n        printed.set()\n"
             "threading.Thread(target=later, daemon=True).start()\nprint('cell ends')")
    nb = run_notebook([LOAD, start, "%%gpu --no-out\nem.end = _end\nprinted.wait(30)\nprint('next cell')"])
    assert stream_text(nb.cells[1]) == "cell ends\n"
    assert stream_text(nb.cells[2]) == "late, from a thread\nnext cell\n"


@pytest.mark.timeout(120)
def test_code_that_needs_the_streams_file_descriptors_gets_them(run_notebook):
    """`subprocess.run(cmd, stdout=sys.stdout)` and `faulthandler.enable()` ask sys.stdout /
    sys.stderr for a descriptor (a kernel's streams have one); they failed with
    UnsupportedOperation: fileno.  What reaches the descriptors is the cell's output."""
    nb = run_notebook(
        [
            LOAD,
            "%%gpu\nimport subprocess, sys\nsubprocess.run(['echo', 'via-fileno'], stdout=sys.stdout)\n"
            "import faulthandler\nfaulthandler.enable()\nfaulthandler.dump_traceback(all_threads=False)\n"
            "print(faulthandler.is_enabled())",
        ]
    )
    assert "via-fileno\n" in stream_text(nb.cells[1], "stdout") and "True\n" in stream_text(nb.cells[1], "stdout")
    assert "Stack (most recent call first)" in stream_text(nb.cells[1], "stderr")
