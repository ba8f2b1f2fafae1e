"""The worker's shell runs a cell again without compiling it again (WorkerShell.run_cell_fast).

A real IPython shell in a subprocess, its events collected: what a cell shows must not depend on
whether its code was compiled now or taken from the cache, and must match IPython's run_cell.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

# Runs in a fresh interpreter: the shell is a process-wide singleton that replaces sys.stdout.
SCRIPT = r"""
import json, sys
out = sys.stdout
from jupyter_gpu_worker.events import Emitter
from jupyter_gpu_worker.shell import make_shell
events = []
emitter = Emitter(lambda header, buffers: events.append(header))
shell = make_shell(emitter)
emitter.cell = "c"
results = []
for number, code, how in json.loads(sys.argv[1]):
    events.clear()
    shell.execution_count = number
    result = shell.run_cell_fast(code) if how == "fast" else shell.run_cell(code, store_history=False)
    emitter.flush()
    err = result.error_before_exec or result.error_in_exec
    results.append({
        "error": type(err).__name__ if err else None,
        "shown": [e["data"]["text/plain"] for e in events if e["type"] == "display"],
        "stdout": "".join(e["text"] for e in events if e["type"] == "stream"),
        "traceback": "\n".join("\n".join(e["traceback"]) for e in events if e["type"] == "error"),
    })
out.write(json.dumps(results))
out.flush()
"""


def run_cells(cells) -> list[dict]:
    env = {"PYTHONPATH": f"{ROOT}:{ROOT / 'worker_image'}", "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(cells)], capture_output=True, text=True,
                       timeout=120, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout)


def strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_a_cell_run_again_shows_the_same_as_the_first_time():
    cell = "x = 20\nprint('p', x)\nx * 2 + 2"
    first, again, slow = run_cells([[1, cell, "fast"], [2, cell, "fast"], [3, cell, "slow"]])
    assert first == again == slow == {"error": None, "shown": ["42"], "stdout": "p 20\n", "traceback": ""}


def test_a_traceback_names_the_running_cell_even_from_cached_code():
    cell = "# %%gpu\ndef f():\n    raise ValueError('boom')\nf()"
    first, again = run_cells([[4, cell, "fast"], [9, cell, "fast"]])
    assert first["error"] == again["error"] == "ValueError"
    tb4, tb9 = strip_ansi(first["traceback"]), strip_ansi(again["traceback"])
    assert "Cell In[4], line 4" in tb4 and "Cell In[4], line 3, in f()" in tb4
    # the function's code object came from the cache: it must still point at cell 9's lines
    assert "Cell In[9], line 4" in tb9 and "Cell In[9], line 3, in f()" in tb9 and "In[4]" not in tb9
    assert "raise ValueError('boom')" in tb9


def test_semicolon_silences_and_only_the_last_expression_shows():
    shown = [r["shown"] for r in run_cells([[1, "1 + 1\n2 + 2;", "fast"], [2, "3 + 3\n4 + 4", "fast"],
                                            [3, "5 + 5  # comment", "fast"]])]
    assert shown == [[], ["8"], ["10"]]


def test_cells_the_fast_path_leaves_to_ipython_still_work():
    syntax, awaited, magic, after_future = run_cells([
        [1, "x = (1,\n", "fast"],  # a syntax error: IPython reports it with the cell's name
        [2, "import asyncio\nawait asyncio.sleep(0)\n'awaited'", "fast"],  # top-level await
        [3, "%time y = 3", "fast"],  # a line magic, through IPython's transforms
        [4, "from __future__ import annotations\ndef g(a: Undefined): pass\ng.__annotations__['a']", "fast"],
    ])
    assert syntax["error"] == "SyntaxError" and "Cell In[1]" in strip_ansi(syntax["traceback"])
    assert awaited == {"error": None, "shown": ["'awaited'"], "stdout": "", "traceback": ""}
    assert magic["error"] is None and "Wall time" in magic["stdout"]
    assert after_future["shown"] == ["'Undefined'"]  # the __future__ import took effect in its own cell


def test_an_exception_in_one_statement_stops_the_rest():
    (r,) = run_cells([[1, "a = 1\nraise KeyError('k')\nprint('not reached')", "fast"]])
    assert r["error"] == "KeyError" and r["stdout"] == ""
