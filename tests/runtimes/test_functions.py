"""`@jupyter_gpu.function` on every runtime (local, docker, ray, local-sync): the same call, the
same value, output and exception as here (tests/runtimes/conftest.py gives the backend and kernel)."""
from __future__ import annotations

import pytest

from tests.conftest import strip_ansi

pytestmark = pytest.mark.timeout(600)  # the first test may wait for an image build or a cluster


def test_a_function_runs_on_the_runtimes_worker_and_answers_as_here(kernel, runtime):
    kernel.run("import jupyter_gpu, os\n@jupyter_gpu.function\ndef where(x):\n    print('on', x)\n"
               "    return x + 1, os.getpid()")
    cell = kernel.run("value, pid = where.remote(41)\nprint(value, pid != os.getpid())")
    assert cell.stdout() == "on 41\n42 True\n"
    assert kernel.run("print(list(where.map([1, 2, 3]))[-1][0])").stdout().endswith("4\n")
    kernel.run("class Refused(Exception):\n    pass\n@jupyter_gpu.function\ndef refuse():\n"
               "    raise Refused('no')")
    cell = kernel.run("refuse.remote()", ok=False)
    assert cell.reply["content"]["ename"] == "Refused"
    assert "raise Refused('no')" in strip_ansi("\n".join(cell.reply["content"]["traceback"]))


def test_a_spawned_call_runs_on_the_runtimes_worker_and_is_kept(kernel, runtime):
    kernel.run("import jupyter_gpu, os\n@jupyter_gpu.function\ndef twice(x):\n    print('twice', x)\n"
               "    return 2 * x, os.getpid()")
    cell = kernel.run("fc = twice.spawn(21)\nvalue, pid = fc.get(timeout=300)\nprint(value, pid != os.getpid())\n"
                      "again = jupyter_gpu.FunctionCall.from_id(fc.object_id)\nprint(again.state, again.get()[0])")
    assert cell.stdout().splitlines() == ["twice 21", "42 True", "twice 21", "done 42"]
