"""Keep-warm expiry: the idle worker stops (scale to zero), and what lived only there is reported
as lost - naming the cell that made it and the keep-warm window - never as a bare NameError."""
from __future__ import annotations

import pytest

from .helpers import LOAD, strip_ansi, wait_pid_exit


def error_of(cell) -> str:
    c = cell.reply["content"]
    return strip_ansi(f"{c.get('ename')}: {c.get('evalue')}")


@pytest.mark.timeout(180)
def test_idle_worker_stops_after_keep_warm_and_its_values_are_explained(live_kernel):
    k = live_kernel
    k.run(LOAD)
    k.run("local_input = 21")
    made = k.run("%%gpu --keep-warm 1s --no-out\nimport os\nonly_there = local_input * 2\nprint(os.getpid())")
    pid = int(made.stdout().strip())
    made_in = made.reply["content"]["execution_count"]
    assert wait_pid_exit(pid, 60), "the worker did not stop after its 1 s keep-warm window"

    status = k.run("%gpu status")
    assert "no workers" in status.stdout()

    lost = k.run("%%gpu\nprint(only_there)", ok=False)
    text = error_of(lost)
    assert lost.reply["content"]["ename"] == "RemoteValueLost", text
    assert f"made by cell [{made_in}]" in text and "keep-warm window (1 s)" in text, text

    # a value that also exists here is simply sent again to the new worker
    again = k.run(f"%%gpu\nimport os\nprint(local_input, os.getpid() != {pid})")
    assert again.stdout().strip() == "21 True"
    # and once the name is made again remotely, it is no longer reported as lost
    k.run("%%gpu --no-out\nonly_there = 7")
    assert k.run("%%gpu\nprint(only_there)").stdout().strip() == "7"


@pytest.mark.timeout(180)
def test_a_released_worker_takes_its_remote_values_with_it(live_kernel):
    k = live_kernel
    k.run(LOAD)
    k.run("%%gpu\nimport threading\nlock = threading.Lock()\nkept = 5")  # lock cannot come back
    assert "<remote" in k.run("print(repr(lock))").stdout()
    k.run("%%gpu --no-out\nhidden = 3")
    assert "released 1 worker(s)" in k.run("%gpu release").stdout()
    for name in ("lock", "hidden"):
        cell = k.run(f"%%gpu\nprint({name})", ok=False)
        assert cell.reply["content"]["ename"] == "RemoteValueLost", error_of(cell)
        assert "Re-run cell" in error_of(cell)
    assert k.run("%%gpu\nprint(kept)").stdout().strip() == "5"  # it came back: sent again
