"""The worker behaviour a user notices, the same on every runtime: `local`, `docker` and `ray`.

Each test runs once per runtime (the `runtime` fixture, tests/runtimes/conftest.py) in one real
kernel per runtime whose `%%gpu` cells go to a real backend of that runtime; a runtime that cannot
run here is skipped with the reason.  The tests share that kernel and its workers, so each one
establishes the state it needs (a cold start, a name) itself and leaves a usable kernel behind.

What the notebook would show is built by nbclient's own output handling from the kernel's iopub
messages (`outputs`), so `clear_output(wait=True)` and display updates are judged as saved.
"""
from __future__ import annotations

import base64
import re
import socket

import nbformat
import pytest
from jupyter_gpu.ci.executor import NotebookClient
from nbclient.exceptions import CellExecutionComplete

from tests.conftest import FOOTER_MIME, strip_ansi

# one image build (docker) or cluster start (ray) may fall in a module's first test
pytestmark = pytest.mark.timeout(600)

PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------
# helpers over LiveKernel cells
# --------------------------------------------------------------------------------------------


def outputs(cell) -> list:
    """The cell's outputs as nbclient would save them in the notebook (clear_output, display
    updates applied; streams as they arrived), footer and live status line included."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(cell.code)]
    client = NotebookClient(nb, record_timing=False)
    client.reset_execution_trackers()  # what execute() and execute_cell() do first
    client.clear_before_next_output = False
    for e in cell.iopub:
        try:
            client.process_message(e.msg, nb.cells[0], 0)
        except CellExecutionComplete:
            pass
    return nb.cells[0].outputs


def user_outputs(cell) -> list:
    """What the user sees as the cell's own output: no footer, no (emptied) live status line."""
    return [o for o in outputs(cell)
            if not (o["output_type"] in ("display_data", "execute_result")
                    and (not o.get("data") or FOOTER_MIME in o["data"]))]


def rich(cell) -> list:
    return [o for o in user_outputs(cell) if o["output_type"] in ("display_data", "execute_result")]


def plain(o) -> str:
    t = o["data"].get("text/plain", "")
    return "".join(t) if isinstance(t, list) else t


def footer(cell) -> dict:
    """The cell's final footer; it must be the cell's last output."""
    outs = outputs(cell)
    assert outs and outs[-1]["output_type"] == "display_data" and FOOTER_MIME in outs[-1]["data"], \
        f"the last output of {cell.code!r} is not the footer: {outs[-1:] if outs else outs}"
    fs = cell.footers()
    assert fs, cell.code
    return fs[-1]


def error_text(cell) -> str:
    c = cell.reply["content"]
    return strip_ansi("\n".join([c.get("ename", ""), c.get("evalue", ""), *c.get("traceback", [])]))


def failed(kernel, code: str, timeout: float = 120):
    """Run a cell that must fail; return it (its reply says status error)."""
    cell = kernel.run(code, timeout=timeout, ok=False)
    assert cell.reply["content"]["status"] == "error", f"{code!r} did not fail: {cell.stdout()!r}"
    return cell


def fresh_worker(kernel) -> dict:
    """Release the session's workers, then a cold start: return that cell's footer."""
    kernel.run("%gpu release")
    return footer(kernel.run("%%gpu\nimport os\nworker_pid = os.getpid()"))


# --------------------------------------------------------------------------------------------
# where the cell runs; the footer
# --------------------------------------------------------------------------------------------


def test_a_cold_then_warm_cell_on_a_worker_of_the_runtime_with_its_footer(kernel, runtime):
    cold = fresh_worker(kernel)
    assert cold["status"] == "ok" and cold["cold"] is True, cold
    assert cold["start_method"] == runtime.start_method, cold
    assert cold["gpu"] and cold["device"], cold
    if cold["gpu"] == "cpu":
        assert cold["device"].startswith("cpu") and "telemetry" not in cold, cold  # never a pretend GPU

    warm = kernel.run("%%gpu\nimport os\nwhere = (os.getpid(), os.readlink('/proc/self/ns/mnt'))")
    f = footer(warm)
    assert (f["status"], f["cold"], f["worker"]) == ("ok", False, cold["worker"]), f
    assert f["timings"]["wall"] > 0 and f["billed_seconds"] >= 0 and f["cost_usd"] >= 0
    # not in the kernel; in a container (a mount namespace of its own) exactly when the runtime says so
    out = kernel.run("import os\nprint(where[0] != os.getpid(), where[1] != os.readlink('/proc/self/ns/mnt'),"
                     " worker_pid == where[0])")
    assert out.stdout() == f"True {runtime.in_container} True\n"
    # the footer's text and html are there for a reader without the extension
    last = outputs(warm)[-1]
    assert plain(last).strip() and last["data"]["text/html"].strip()


# --------------------------------------------------------------------------------------------
# streams
# --------------------------------------------------------------------------------------------


def test_output_streams_live_in_order_none_lost_or_duplicated(kernel):
    kernel.run("%%gpu\nimport socket")  # warm: this cell measures streaming, not a cold start
    # The cell prints 200 lines, then blocks until the test answers on a port; the test answers
    # only once all 200 have reached the kernel's iopub - they can only if they streamed live.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        cell = kernel.submit(
            "%%gpu\nfor i in range(200):\n    print(i)\n"
            f"print(socket.create_connection(('127.0.0.1', {port})).recv(2).decode())\n"
            "for i in range(200, 400):\n    print(i)")
        assert kernel.wait_until(lambda: "\n199\n" in cell.stdout(), 60), \
            f"the first 200 lines did not stream while the cell ran: {cell.stdout()[-200:]!r}"
        assert cell.reply is None
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"go")
    assert kernel.wait_until(lambda: cell.done, 60)
    assert cell.reply["content"]["status"] == "ok"
    lines = cell.stdout().split("\n")
    assert lines[-1] == "" and lines[200] == "go"
    del lines[200]
    assert lines[:-1] == [str(i) for i in range(400)]  # none lost, none duplicated, in order
    assert cell.streams("stderr") == []
    assert all(e.t <= cell.reply_at for e in cell.streams())


def test_carriage_return_progress_is_kept_unchanged(kernel):
    cell = kernel.run("%%gpu\nfor i in range(3):\n    print(f'progress {i}', end='\\r')\nprint('done')")
    assert cell.stdout() == "progress 0\rprogress 1\rprogress 2\rdone\n"


def test_stderr_is_its_own_stream(kernel):
    cell = kernel.run("%%gpu\nimport sys\nprint('out')\nprint('err', file=sys.stderr)")
    assert cell.stdout() == "out\n"
    assert "".join(e.msg["content"]["text"] for e in cell.streams("stderr")) == "err\n"


def test_output_of_subprocesses_and_raw_file_descriptors_reaches_the_cell(kernel):
    """What a local ipykernel shows too: a child process's output, and bytes written straight to
    fds 1 and 2 (a C library's logging), all before the cell ends; Python's own print is not
    doubled by it."""
    cell = kernel.run("%%gpu\nimport os, subprocess, sys\nprint('from print', flush=True)\n"
                      "subprocess.run([sys.executable, '-c', 'print(\"from a child\")'], check=True)\n"
                      "subprocess.run([sys.executable, '-c', 'import sys; sys.stderr.write(\"child err\\\\n\")'])\n"
                      "os.write(1, b'raw fd 1\\n')\nos.write(2, b'raw fd 2\\n')")
    out = cell.stdout()
    assert sorted(out.splitlines()) == ["from a child", "from print", "raw fd 1"], out
    err = "".join(e.msg["content"]["text"] for e in cell.streams("stderr"))
    assert sorted(err.splitlines()) == ["child err", "raw fd 2"], err
    assert all(e.t <= cell.reply_at for e in cell.streams())
    # and the next cell gets none of it
    assert kernel.run("%%gpu\nprint('next')").stdout() == "next\n"


# --------------------------------------------------------------------------------------------
# displays
# --------------------------------------------------------------------------------------------


def test_last_expression_is_displayed_with_the_cells_execution_count(kernel):
    cell = kernel.run("%%gpu\nx = 41\nx + 1")
    (out,) = rich(cell)
    assert out["output_type"] == "execute_result" and plain(out) == "42"
    assert out["execution_count"] == cell.reply["content"]["execution_count"]
    footer(cell)


def test_display_of_rich_mimebundles(kernel):
    cell = kernel.run(f"""%%gpu
import base64
from IPython.display import display, HTML, Image, JSON, Markdown
display(HTML('<b>bold</b>'))
display(Image(data=base64.b64decode('{PNG_B64}'), format='png'))
display(JSON({{'a': 1, 'b': [1, 2]}}))
display(Markdown('# Title'))
display({{'text/plain': 'raw plain', 'text/html': '<i>raw</i>'}}, raw=True)
""")
    outs = rich(cell)
    assert len(outs) == 5, [sorted(o["data"]) for o in outs]
    html, png, js, md, raw = (o["data"] for o in outs)
    assert html["text/html"] == "<b>bold</b>"
    assert base64.b64decode(png["image/png"]).startswith(PNG_MAGIC)
    assert js["application/json"] == {"a": 1, "b": [1, 2]}
    assert md["text/markdown"] == "# Title"
    assert raw == {"text/plain": "raw plain", "text/html": "<i>raw</i>"}
    footer(cell)


def test_matplotlib_figure_is_shown_as_png(kernel):
    # local and ray workers run in the backend's environment; the docker worker image has
    # matplotlib too (docker_image.WORKER_PACKAGES)
    cell = kernel.run("%%gpu\nimport matplotlib.pyplot as plt\nplt.plot([3, 1, 2])\nplt.show()")
    pngs = [o for o in rich(cell) if "image/png" in o["data"]]
    assert len(pngs) == 1, [sorted(o["data"]) for o in rich(cell)]
    assert base64.b64decode(pngs[0]["data"]["image/png"]).startswith(PNG_MAGIC)


def test_clear_output_wait_leaves_only_the_final_text(kernel):
    cell = kernel.run("%%gpu\nfrom IPython.display import clear_output\nfor i in range(20):\n"
                      "    clear_output(wait=True)\n    print(f'step {i}')")
    assert [(o["output_type"], o.get("text")) for o in user_outputs(cell)] == [("stream", "step 19\n")]
    footer(cell)


def test_display_id_update_leaves_one_updated_output_per_cell(kernel):
    first = kernel.run("%%gpu\nh1 = display('first', display_id=True)")
    second = kernel.run("%%gpu\nh2 = display('second', display_id=True)\nh2.update('second, updated')")
    assert [plain(o) for o in rich(first)] == ["'first'"]  # ids of two cells do not collide
    assert [plain(o) for o in rich(second)] == ["'second, updated'"]
    assert footer(first)["status"] == footer(second)["status"] == "ok"


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


def test_an_exception_fails_the_cell_with_the_cells_own_line_numbers(kernel):
    cell = failed(kernel, "%%gpu\nx = 1\ny = x / 0\nprint('not reached')")
    c = cell.reply["content"]
    assert (c["status"], c["ename"]) == ("error", "ZeroDivisionError") and "division by zero" in c["evalue"]
    tb = error_text(cell)
    assert re.search(r"-+>\s*2\s+y = x / 0", tb), tb  # numbered from the body's first line, as the same local cell
    assert "not reached" not in cell.stdout()
    (err,) = [o for o in outputs(cell) if o["output_type"] == "error"]
    assert err["ename"] == "ZeroDivisionError"
    assert footer(cell)["status"] == "error"  # the footer is still the last output


def test_a_custom_exception_class_defined_in_the_cell_keeps_its_name_and_message(kernel):
    cell = failed(kernel, "%%gpu\nclass MyErr(Exception):\n    pass\nraise MyErr('boom')")
    c = cell.reply["content"]
    assert (c["ename"], c["evalue"]) == ("MyErr", "boom"), error_text(cell)
    assert footer(cell)["status"] == "error"
    # the worker is fine afterwards
    assert kernel.run("%%gpu\nprint('still here')").stdout() == "still here\n"


# --------------------------------------------------------------------------------------------
# names in and out
# --------------------------------------------------------------------------------------------


def test_names_go_in_and_come_back(kernel):
    kernel.run("a_in = 5")
    kernel.run("%%gpu\nb_out = a_in * 2")
    assert kernel.run("print(b_out)").stdout() == "10\n"
    kernel.run("%%gpu --no-out\nkept_remote = 7")
    assert kernel.run("print('kept_remote' in globals())").stdout() == "False\n"
    assert kernel.run("%%gpu\nprint(kept_remote * 6)").stdout() == "42\n"


def test_array_round_trip_is_equal_and_an_unchanged_input_is_not_resent(kernel):
    size = 8 * 1024 * 1024
    kernel.run(f"import numpy as np\narr = np.random.default_rng(0).random({size // 8})")
    there = footer(kernel.run("%%gpu\narr_back = arr[::-1].copy()"))
    out = kernel.run("print(np.array_equal(arr_back[::-1], arr), arr_back.dtype, arr_back.nbytes)")
    assert out.stdout() == f"True float64 {size}\n", "the array did not come back equal"
    sent, received = there["transfer"]["sent_bytes"], there["transfer"]["received_bytes"]
    assert sent >= size and received >= size, there["transfer"]  # the footer counts what moved
    again = kernel.run("%%gpu\ntotal = float(arr.sum())")
    assert kernel.run("print(total == float(arr.sum()))").stdout() == "True\n", "the worker computed on a different array"
    sent2 = footer(again)["transfer"]["sent_bytes"]
    assert sent2 <= 1024, f"an unchanged {size} B input was sent again ({sent2} B)"


def test_an_unpicklable_input_is_refused_naming_the_variable(kernel):
    kernel.run("import threading\nlock_in = threading.Lock()")
    cell = failed(kernel, "%%gpu\nprint(lock_in)")
    c = cell.reply["content"]
    assert c["ename"] == "SerializationError" and "lock_in" in c["evalue"], error_text(cell)


def test_an_unpicklable_result_stays_remote_and_is_usable_later(kernel):
    made = kernel.run("%%gpu\ngen_out = (i * 2 for i in range(3))")
    assert footer(made)["status"] == "ok"
    rep, typename = kernel.run("print(repr(gen_out))\nprint(type(gen_out).__name__)").stdout().splitlines()
    assert rep.startswith("<remote") and "generator" in rep and typename == "RemoteValue", rep
    assert kernel.run("%%gpu\nprint(list(gen_out))").stdout() == "[0, 2, 4]\n"


def test_a_result_that_does_not_unpickle_here_stays_remote_and_the_others_come_back(kernel):
    # what a CUDA tensor does on a kernel without CUDA: it pickles on its worker, fails to load here
    made = kernel.run(
        "%%gpu\nimport os\ndef _rebuild(pid):\n    if os.getpid() != pid:\n"
        "        raise RuntimeError('this value only loads on its worker')\n    return OnlyThere()\n"
        "class OnlyThere:\n    def __reduce__(self):\n        return (_rebuild, (os.getpid(),), self.__dict__)\n"
        "there = OnlyThere()\nthere.pad = bytes(8192)\nplain_too = 42")
    assert footer(made)["status"] == "ok", error_text(made) if made.reply["content"]["status"] != "ok" else ""
    out = kernel.run("print(plain_too)\nprint(repr(there))\nprint(there.why)").stdout().splitlines()
    assert out[0] == "42" and out[1].startswith("<remote") and "OnlyThere" in out[1], out
    assert "this value only loads on its worker" in out[2], out
    again = kernel.run("%%gpu\nprint(type(there).__name__, plain_too)")  # there, with no transfer
    assert again.stdout() == "OnlyThere 42\n" and footer(again)["transfer"]["sent_bytes"] < 1024
    # changed in place where it lives: the worker's copy is the value, nothing is pickled to come back
    changed = kernel.run("%%gpu\nthere.steps = 1")
    assert footer(changed)["transfer"]["received_bytes"] < 1024, footer(changed)["transfer"]
    assert kernel.run("%%gpu\nprint(there.steps, type(there).__name__)").stdout() == "1 OnlyThere\n"


# --------------------------------------------------------------------------------------------
# the stop button; a worker that dies; keep-warm expiry
# --------------------------------------------------------------------------------------------


def test_the_stop_button_interrupts_a_long_sleep_and_the_worker_stays_warm(kernel):
    before = footer(kernel.run("%%gpu\nimport os, time\nmarker = 'alive'\nbefore_pid = os.getpid()"))
    cell = kernel.submit("%%gpu\nduring = 'set before the interrupt'\nprint('sleeping', flush=True)\ntime.sleep(60)")
    assert kernel.wait_until(lambda: "sleeping" in cell.stdout(), 60), "the remote cell never started"
    assert cell.reply is None
    t0 = kernel.interrupt()
    assert kernel.wait_until(lambda: cell.reply is not None, 15), "no execute_reply after an interrupt"
    assert cell.reply_at - t0 < 5.0, f"the sleep was interrupted only after {cell.reply_at - t0:.1f} s"
    c = cell.reply["content"]
    assert (c["status"], c["ename"]) == ("error", "KeyboardInterrupt"), error_text(cell)
    assert kernel.wait_until(lambda: cell.done, 10)
    assert footer(cell)["status"] == "interrupted"

    after = kernel.run("%%gpu\nprint(marker, '|', during, '|', os.getpid() == before_pid)")
    assert after.stdout() == "alive | set before the interrupt | True\n"  # same worker, same namespace
    f = footer(after)
    assert f["cold"] is False and f["worker"] == before["worker"], f


def test_input_asks_the_user_and_the_stop_button_ends_the_wait(kernel):
    def asked(cell) -> dict:
        n = len(cell.input_requests())
        assert kernel.wait_until(lambda: len(cell.input_requests()) > n or cell.done, 60) and not cell.done, \
            f"never asked: {cell.stdout()!r} {cell.errors()}"
        return cell.input_requests()[-1]

    cell = kernel.submit("%%gpu\nwho = input('who? ')\nprint('hi', who)", allow_stdin=True)
    assert asked(cell) == {"prompt": "who? ", "password": False}
    kernel.answer("Grace")
    assert kernel.wait_until(lambda: cell.done, 60) and cell.stdout() == "hi Grace\n", cell.errors()
    waiting = kernel.submit("%%gpu\nnever = input('never answered: ')", allow_stdin=True)
    asked(waiting)
    kernel.interrupt()
    assert kernel.wait_until(lambda: waiting.done, 30), "the stop button did not end the wait"
    assert waiting.reply["content"]["ename"] == "KeyboardInterrupt", error_text(waiting)
    assert kernel.run("%%gpu\nprint(who)").stdout() == "Grace\n"  # the worker stayed, its namespace too


def test_a_second_press_kills_a_worker_that_ignores_the_first(kernel, runtime):
    warm = footer(kernel.run("%%gpu\nimport os, signal, time\nstubborn_pid = os.getpid()"))
    gone = runtime.watch(warm["worker"], int(kernel.run("print(stubborn_pid)").stdout()))
    cell = kernel.submit("%%gpu\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('ignoring', flush=True)\n"
                         "time.sleep(60)")
    assert kernel.wait_until(lambda: "ignoring" in cell.stdout(), 60), "the remote cell never started"
    kernel.interrupt()
    # its code ignores SIGINT: the first press does not end it (no reply for a second) ...
    assert not kernel.wait_until(lambda: cell.reply is not None, 1.0), error_text(cell)
    t1 = kernel.interrupt()  # ... the second kills the worker
    assert kernel.wait_until(lambda: cell.reply is not None, 15), "no execute_reply after a second press"
    assert cell.reply_at - t1 < 10
    text = error_text(cell)
    assert cell.reply["content"]["status"] == "error" and re.search(r"\bworker\b[^\n]{0,60}\bkilled\b", text, re.I), text
    assert kernel.wait_until(lambda: cell.done, 10)
    assert footer(cell)["status"] == "killed"
    assert gone(30), f"worker {warm['worker']} still there 30 s after it was killed"
    f = footer(kernel.run("%%gpu\nx = 1"))
    assert f["cold"] is True and f["worker"] != warm["worker"], f


@pytest.mark.parametrize("death, cause", [
    ("import os\nos._exit(3)", "exited with code 3"),
    ("import ctypes\nctypes.string_at(0)", "killed by SIGSEGV"),
], ids=["exit-3", "sigsegv"])
def test_a_worker_that_dies_fails_only_its_cell_and_the_next_gets_a_new_worker(kernel, runtime, death, cause):
    warm = footer(kernel.run("%%gpu\nimport os\ndoomed = 'here'\ndoomed_pid = os.getpid()"))
    pid = int(kernel.run("print(doomed_pid)").stdout())
    gone = runtime.watch(warm["worker"], pid)
    cell = failed(kernel, f"%%gpu\nprint('dying', flush=True)\n{death}")
    c = cell.reply["content"]
    assert c["ename"] == "WorkerLost" and cause in c["evalue"], error_text(cell)
    assert "dying" in cell.stdout()  # what it printed before it died was not lost
    assert footer(cell)["status"] == "lost"
    assert gone(30), f"worker {warm['worker']} still there 30 s after it died"

    after = kernel.run("%%gpu\nprint('doomed' in dir())")
    assert after.stdout() == "False\n"  # a new worker, with a new namespace
    f = footer(after)
    assert f["cold"] is True and f["worker"] != warm["worker"] and f["start_method"] == runtime.start_method, f


def test_workers_that_died_give_back_what_they_held_so_new_ones_still_start(kernel):
    """More crashes in a row than the runtime has room for workers at once (a local Ray cluster
    here holds 4 actors of 0.5 CPU): each dead worker's hold (a Ray actor's CPUs or GPU) is freed,
    so the next cell still gets a new worker instead of waiting for a slot that never frees."""
    for i in range(5):
        cell = failed(kernel, f"%%gpu\nprint('crash {i}', flush=True)\nimport os\nos._exit(3)")
        assert cell.reply["content"]["ename"] == "WorkerLost", error_text(cell)
    after = kernel.run("%%gpu\nprint('still served')", timeout=60)
    assert after.stdout() == "still served\n" and footer(after)["cold"] is True


def test_release_stops_the_worker_and_its_remote_values_go_with_it(kernel, runtime):
    made = kernel.run("%%gpu --out released_pid\nimport os\nhidden = 3\nreleased_pid = os.getpid()")
    worker = footer(made)["worker"]
    gone = runtime.watch(worker, int(kernel.run("print(released_pid)").stdout()))
    assert "released 1 worker(s)" in kernel.run("%gpu release").stdout()
    assert gone(30), f"worker {worker} still there 30 s after its release"
    assert worker not in runtime.leased_workers()
    lost = failed(kernel, "%%gpu\nprint(hidden)")
    assert lost.reply["content"]["ename"] == "RemoteValueLost" and "Re-run cell" in error_text(lost), error_text(lost)


def test_keep_warm_expiry_scales_to_zero_and_explains_what_was_lost(kernel, runtime):
    kernel.run("local_input = 21")
    made = kernel.run("%%gpu --keep-warm 1s --out expiring_pid\n"
                      "import os\nonly_there = local_input * 2\nexpiring_pid = os.getpid()")
    worker = footer(made)["worker"]
    made_in = made.reply["content"]["execution_count"]
    gone = runtime.watch(worker, int(kernel.run("print(expiring_pid)").stdout()))
    assert gone(60), "the worker did not stop after its 1 s keep-warm window"
    assert worker not in runtime.leased_workers()
    assert "no workers" in kernel.run("%gpu status").stdout()

    lost = failed(kernel, "%%gpu\nprint(only_there)")
    text = error_text(lost)
    assert lost.reply["content"]["ename"] == "RemoteValueLost", text
    assert f"made by cell [{made_in}]" in text and "keep-warm window (1 s)" in text, text
    # a value that also exists in the kernel is simply sent again to the new worker
    again = kernel.run("%%gpu\nprint(local_input)")
    assert again.stdout() == "21\n" and footer(again)["cold"] is True and footer(again)["worker"] != worker


def test_a_named_image_runs_on_its_own_worker_with_its_environment(kernel, runtime):
    """[images.marked] in serve's config: its cells run on a worker of that image (its env set),
    apart from the default image's worker and namespace."""
    default = kernel.run("%%gpu\nimport os\nwhere = os.environ.get('JUPYTER_GPU_TEST_MARK', 'unmarked')\nprint(where)")
    marked = kernel.run("%%gpu --image marked\nimport os\nprint(os.environ.get('JUPYTER_GPU_TEST_MARK'))\n"
                        "print('where' in dir())")
    assert default.stdout() == "unmarked\n"
    assert marked.stdout() == "marked\nFalse\n"  # its own namespace: `where` lives on the default worker
    fd, fm = footer(default), footer(marked)
    assert fm["image"] == "marked" and fd["image"] == "default" and fm["worker"] != fd["worker"], (fd, fm)
    again = kernel.run("%%gpu --image marked\nprint('again')")
    assert footer(again)["worker"] == fm["worker"] and footer(again)["cold"] is False  # its warm worker


# --------------------------------------------------------------------------------------------
# widgets: comms both ways, on every runtime (the backend relays them where there is no lane)
# --------------------------------------------------------------------------------------------


def test_a_widget_made_on_the_worker_answers_the_frontend(kernel):
    made = kernel.run("%%gpu\nimport ipywidgets as W\ns = W.IntSlider(value=1)\n"
                      "s.observe(lambda ch: print('now', ch['new']), names='value')\ns")
    opened = {e.msg["content"]["data"]["state"]["_model_name"]: e.msg["content"]["comm_id"]
              for e in made.iopub if e.msg["msg_type"] == "comm_open"}
    assert "IntSliderModel" in opened, opened
    moved = kernel.comm_send(opened["IntSliderModel"], {"method": "update", "state": {"value": 9}, "buffer_paths": []})
    assert kernel.wait_until(lambda: moved.idle, 60)
    printed = "".join(e.msg["content"]["text"] for e in moved.iopub if e.msg["msg_type"] == "stream")
    assert printed == "now 9\n"
    assert kernel.run("%%gpu\nprint(s.value)").stdout() == "9\n"
