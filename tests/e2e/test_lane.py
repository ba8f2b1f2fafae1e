"""The direct lane: warm cells of a kernel on the workers' host go straight to the worker, and
behave exactly like cells relayed by the backend - metered, killable, and failing with the cause."""
from __future__ import annotations

import json
import re
import urllib.request

import pytest

from .helpers import LOAD, strip_ansi

pytestmark = pytest.mark.timeout(180)


def _error_text(cell) -> str:
    c = cell.reply["content"]
    return strip_ansi("\n".join([c.get("ename", ""), c.get("evalue", ""), *c.get("traceback", [])]))


def _api(runtime_dir, path: str) -> dict:
    info = json.loads((runtime_dir / "backend.json").read_text())
    req = urllib.request.Request(f"{info['url']}{path}", headers={"Authorization": f"token {info['token']}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def _ledger_cells(runtime_dir, worker: str) -> list:
    return [c for c in _api(runtime_dir, "/api/cells")["cells"] if c["worker"] == worker]


def _worker_state(runtime_dir, worker: str) -> str | None:
    for s in _api(runtime_dir, "/api/status")["sessions"].values():
        for lease in s["leases"]:
            if lease["worker"] == worker:
                return lease["state"]
    return None


def test_warm_cells_take_the_lane_stream_live_and_are_metered(live_kernel, gpu_runtime_dir):
    k = live_kernel
    k.run(LOAD)
    first = k.run("%%gpu\nfrom IPython.display import HTML, display\nbase = 40")
    assert first.footers()[-1]["route"] == "backend"  # the first cell of a lease is relayed
    worker = first.footers()[-1]["worker"]

    cell = k.submit("%%gpu\nimport time\nfor i in range(3):\n    print('line', i, flush=True)\n"
                    "    time.sleep(0.4)\ndisplay(HTML('<b>shown</b>'))\nanswer = base + 2\nanswer")
    assert k.wait_until(lambda: "line 0" in cell.stdout(), 30), "no live output"
    assert cell.reply is None, "the first line arrived only after the cell ended"
    # the backend does not relay this cell, yet it learns the worker is busy with it (a lane cell
    # is announced once it has run a moment: reports.STARTED_AFTER)
    assert k.wait_until(lambda: _worker_state(gpu_runtime_dir, worker) == "busy", 10)
    assert cell.reply is None
    assert any(c["status"] == "running" for c in _api(gpu_runtime_dir, "/api/cells")["cells"])
    assert k.wait_until(lambda: cell.done, 60)
    assert cell.stdout() == "line 0\nline 1\nline 2\n"
    kinds = [e.msg["msg_type"] for e in cell.iopub]
    assert "execute_result" in kinds and "display_data" in kinds
    f = cell.footers()[-1]
    assert (f["route"], f["worker"], f["cold"], f["status"]) == ("lane", worker, False, "ok"), f
    assert f["timings"]["run"] > 1.0  # timed by the worker: the cell slept 1.2 s
    assert k.run("print(answer)").stdout().strip() == "42"  # names come back by the lane too

    # the backend metered both cells (the lane one with the worker's timings)
    assert k.wait_until(lambda: len([c for c in _ledger_cells(gpu_runtime_dir, worker) if c["status"] == "ok"]) >= 2, 20)
    runs = sorted(c["run_s"] for c in _ledger_cells(gpu_runtime_dir, worker))
    assert runs[-1] > 1.0, runs
    assert _worker_state(gpu_runtime_dir, worker) == "idle"


def test_short_lane_cells_are_metered_once_the_worker_is_idle_dated_to_when_they_ran(live_kernel, gpu_runtime_dir):
    """The worker reports short lane cells after the kernel has its answer (off the round trip):
    the ledger still gets every one, with the time it ran, and the keep-warm window counts from
    the cell's end."""
    k = live_kernel
    k.run(LOAD)
    worker = k.run("%%gpu\nn = 0").footers()[-1]["worker"]
    footers = [k.run("%%gpu\nn += 1").footers()[-1] for _ in range(5)]
    assert [f["route"] for f in footers] == ["lane"] * 5
    assert k.run("print(n)").stdout().strip() == "5"
    assert k.wait_until(lambda: len([c for c in _ledger_cells(gpu_runtime_dir, worker) if c["status"] == "ok"]) == 6, 20)
    lane_cells = sorted(_ledger_cells(gpu_runtime_dir, worker), key=lambda c: c["submitted"])[1:]
    for c, f in zip(lane_cells, footers):  # dated when they ran (within the kernel's wall time), not when reported
        ran_from, ran_to = f["started_at"] - 0.005, f["started_at"] + f["timings"]["wall"] + 0.005
        assert ran_from <= c["submitted"] <= c["done"] <= ran_to, (c, f["started_at"], f["timings"])
    assert _worker_state(gpu_runtime_dir, worker) == "idle"


def test_a_worker_that_segfaults_in_a_lane_cell_fails_that_cell_with_the_signal(live_kernel, gpu_runtime_dir):
    k = live_kernel
    k.run(LOAD)
    k.run("%%gpu\nkept = 1")
    cell = k.run("%%gpu\nimport ctypes\nctypes.string_at(0)", ok=False)
    assert cell.reply["content"]["status"] == "error"
    text = _error_text(cell)
    assert cell.reply["content"]["ename"] == "WorkerLost", text
    assert "SIGSEGV" in text, text
    assert cell.footers()[-1]["status"] == "lost"
    # it died before it was announced to the backend, yet the ledger has it, as lost
    lost_worker = cell.footers()[-1]["worker"]
    assert k.wait_until(lambda: [c["status"] for c in _ledger_cells(gpu_runtime_dir, lost_worker)
                                 if c["status"] != "ok"] == ["lost"], 20), _ledger_cells(gpu_runtime_dir, lost_worker)
    # the next cell gets a new worker (cold), and the kernel still has what came back earlier
    after = k.run("%%gpu\ny = kept + 1\nprint(y)")
    assert after.stdout().strip() == "2"
    assert after.footers()[-1]["cold"] is True


def test_the_backend_can_be_told_to_relay_every_cell(fresh_kernel_env):
    from tests.conftest import LiveKernel

    k = LiveKernel({**fresh_kernel_env, "JUPYTER_GPU_LANE": "0"})
    try:
        k.run(LOAD)
        routes = [k.run("%%gpu\nx = 1").footers()[-1]["route"] for _ in range(3)]
        assert routes == ["backend"] * 3
        status = k.run("%gpu status").stdout()
        assert re.search(r"keep-warm", status), status
    finally:
        k.shutdown()


def test_a_value_the_worker_no_longer_holds_is_asked_for_by_the_lane_and_sent_again(live_kernel):
    """The kernel counts on a value its worker holds, and the worker has lost track of it (here its
    bookkeeping is emptied behind the kernel's back): the worker answers the lane cell `resend`,
    and the cell goes again, through the backend, with all its inputs, and runs."""
    k = live_kernel
    k.run(LOAD)
    k.run("%%gpu\na = [1, 2, 3]")
    assert k.run("%%gpu\nb = 1").footers()[-1]["route"] == "lane"
    k.run("%%gpu --no-out\nimport gc, jupyter_gpu_worker.results as r\n"
          "_ = [h.held.clear() for h in gc.get_objects() if isinstance(h, r.Holdings)]")
    cell = k.run("%%gpu\nprint(sum(a))")
    assert cell.reply["content"]["status"] == "ok", _error_text(cell)
    assert cell.stdout() == "6\n"
    assert cell.footers()[-1]["route"] == "backend"
