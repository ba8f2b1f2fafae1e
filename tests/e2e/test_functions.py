"""`@jupyter_gpu.function` (issue 22, first part): `.remote` / `.local` / `.map` on a real kernel,
backend and workers; what a remote call does is compared with the same call made here."""
from __future__ import annotations

import html
import re

import pytest

from tests.conftest import FOOTER_MIME, LiveKernel, strip_ansi

from .helpers import LOAD

pytestmark = pytest.mark.timeout(240)

DEFINE = """\
import jupyter_gpu

@jupyter_gpu.function(gpu="cpu")
def square(x, shift=0):
    print(f"squaring {x}")
    return x * x + shift
"""


@pytest.fixture(scope="module")
def k(kernel_env):
    kernel = LiveKernel(kernel_env)
    kernel.run(LOAD)
    kernel.run(DEFINE)
    yield kernel
    kernel.shutdown()


def traceback_text(cell) -> str:
    return strip_ansi("\n".join(cell.reply["content"].get("traceback", [])))


def test_remote_returns_what_local_does_and_prints_into_the_calling_cell(k):
    here = k.run("print(square.local(7, shift=1))")
    there = k.run("print(square.remote(7, shift=1))")
    assert there.stdout() == here.stdout() == "squaring 7\n50\n"
    (f,) = there.footers()  # one footer for the cell's call, none for the local one
    assert f["calls"] == 1 and f["status"] == "ok" and f["gpu"] == "cpu"
    assert here.footers() == []
    outputs = [e.msg for e in there.iopub if e.msg["msg_type"] in ("stream", "display_data")]
    assert FOOTER_MIME in outputs[-1]["content"].get("data", {}), outputs  # the footer is the cell's last output
    # a cell of several calls: one footer, summing them
    cell = k.run("print([square.remote(i) for i in range(3)])")
    assert cell.stdout() == "squaring 0\nsquaring 1\nsquaring 2\n[0, 1, 4]\n"
    (f,) = cell.footers()
    assert f["calls"] == 3 and f["billed_seconds"] > 0 and "3 function calls" in \
        next(e.msg["content"]["data"]["text/plain"] for e in cell.iopub if e.msg["msg_type"] == "display_data"
             and FOOTER_MIME in e.msg["content"]["data"])


def test_an_unchanged_definition_is_not_sent_again(k):
    k.run("@jupyter_gpu.function(gpu='cpu')\ndef big(x, table=tuple(range(200_000))):\n    return table[x]")
    first = k.run("big.remote(5)").footers()[0]["transfer"]["sent_bytes"]
    second = k.run("big.remote(6)").footers()[0]["transfer"]["sent_bytes"]
    assert first > 500_000 and second < 10_000, (first, second)
    # re-running the same definition: the same function, nothing uploaded again
    k.run("@jupyter_gpu.function(gpu='cpu')\ndef big(x, table=tuple(range(200_000))):\n    return table[x]")
    assert k.run("print(big.remote(7))").footers()[0]["transfer"]["sent_bytes"] < 10_000


def test_an_exception_is_the_users_own_type_with_the_defining_cells_line(k):
    k.run("class Oops(ValueError):\n    pass\n\n@jupyter_gpu.function(gpu='cpu')\ndef fails(x):\n"
          "    y = x + 1\n    raise Oops(f'bad {y}')")
    here = k.run("try:\n    fails.remote(1)\nexcept Oops as e:\n    print('caught', type(e).__name__, e)")
    assert here.stdout() == "caught Oops bad 2\n"
    cell = k.run("fails.remote(2)", ok=False)
    tb = traceback_text(cell)
    assert cell.reply["content"]["ename"] == "Oops" and "bad 3" in tb
    assert "Cell In[" in tb and "line 7" in tb and "raise Oops" in tb, tb  # its defining cell, its line
    assert "calls.py" not in tb  # the worker's own frame is not the user's
    assert k.run("print(square.remote(3))").stdout() == "squaring 3\n9\n"  # the kernel goes on


def test_map_keeps_the_input_order_and_says_which_item_failed(k):
    cell = k.run("r = square.map(range(600))\nprint(type(r).__name__)\nout = list(r)\n"
                 "print(out == [i * i for i in range(600)])", timeout=120)
    assert cell.stdout().splitlines()[0] == "MapResult" and cell.stdout().endswith("True\n")
    assert cell.stdout().count("squaring") == 600  # (its progress: test_a_maps_progress_*)
    k.run("@jupyter_gpu.function(gpu='cpu')\ndef inv(x):\n    return 1 / x")
    cell = k.run("r = inv.map([1, 2, 0, 4], return_exceptions=True)\nprint(list(r))")
    assert cell.stdout() == "[1.0, 0.5, ZeroDivisionError('division by zero'), 0.25]\n"
    said = cell.stderr()
    assert said == "inv.map: item 2 raised ZeroDivisionError: division by zero\n"  # once, with its index
    cell = k.run("list(inv.map([1, 0, 2]))", ok=False)
    assert cell.reply["content"]["ename"] == "ItemFailed" and "item 1 of inv.map" in traceback_text(cell)
    # retry only the failures: the function fixed (redefined), the item runs again
    k.run("@jupyter_gpu.function(gpu='cpu')\ndef inv(x):\n    return 1 / x if x else float('inf')")
    k.run("r.f = inv")  # (the result keeps the function it ran; here: the fixed one)
    assert k.run("print(r.retry_failed(), r.failed)").stdout() == "{2: inf} {}\n"
    # a generator is read as it goes
    cell = k.run("print(sum(square.map(x for x in range(1000))))", timeout=120)
    assert cell.stdout().endswith(f"{sum(i * i for i in range(1000))}\n")


def test_the_stop_button_interrupts_a_remote_call_and_its_worker_stays_warm(k):
    k.run("@jupyter_gpu.function(gpu='cpu')\ndef slow():\n    import time\n    print('started', flush=True)\n"
          "    time.sleep(60)")
    cell = k.submit("slow.remote()")
    assert k.wait_until(lambda: "started" in cell.stdout(), 60)
    k.interrupt()
    assert k.wait_until(lambda: cell.done, 30)
    assert cell.reply["content"]["ename"] == "KeyboardInterrupt"
    after = k.run("print(square.remote(4))")
    assert after.stdout() == "squaring 4\n16\n" and after.footers()[0]["cold"] is False


def _package(root, version: str, body: str) -> None:
    """An installed package `jg_vpkg` of that version in ``root`` (its dist-info names it)."""
    (root / "jg_vpkg").mkdir(parents=True)
    (root / "jg_vpkg" / "__init__.py").write_text(body)
    info = root / f"jg_vpkg-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: jg_vpkg\nVersion: {version}\n")
    (info / "top_level.txt").write_text("jg_vpkg\n")


def test_a_worker_whose_packages_differ_shows_the_table_before_the_call_or_instead_of_unpickling(tmp_path):
    from tests.conftest import make_kernel_env
    from tests.integration.backend_process import start_backend, stop_backend

    mine, theirs = tmp_path / "kernel-site", tmp_path / "worker-site"
    _package(mine, "1.0", "class Thing:\n    pass\ndef name():\n    return 'one'\n")
    _package(theirs, "2.0", "def name():\n    return 'two'\n")  # no Thing
    cfg = tmp_path / "serve.toml"
    cfg.write_text(f'[images.old]\nenv = {{ PYTHONPATH = "{theirs}" }}\n')
    proc, url = start_backend(tmp_path, "--token", "hs", "--config", str(cfg), "--keep-warm", "120",
                              env={"JUPYTER_GPU_PRELOAD": "cloudpickle,IPython"})
    env = {**make_kernel_env(tmp_path), "JUPYTER_GPU_URL": url, "JUPYTER_GPU_TOKEN": "hs", "PYTHONPATH": str(mine)}
    k = LiveKernel(env)
    try:
        k.run(LOAD)
        k.run("import jupyter_gpu, jg_vpkg\nfrom jg_vpkg import Thing\n"
              "@jupyter_gpu.function(gpu='cpu', image='old')\ndef which():\n    return jg_vpkg.name()\n"
              "@jupyter_gpu.function(gpu='cpu', image='old')\ndef make():\n    return Thing()")
        cell = k.run("print(which.remote())")
        said = cell.stderr()
        assert cell.stdout() == "two\n"  # it loaded, and ran against the worker's version
        assert "differs from the kernel's in what which uses" in said and "jg_vpkg" in said
        assert "1.0" in said and "2.0" in said
        cell = k.run("make.remote()", ok=False)  # pickled with a reference to jg_vpkg.Thing, which 2.0 lacks
        err = traceback_text(cell) + cell.reply["content"].get("evalue", "")
        assert cell.reply["content"]["ename"] == "SerializationError", err
        assert "could not be loaded on this worker, whose environment differs" in err
    finally:
        k.shutdown()
        stop_backend(proc)


def test_setup_runs_once_per_worker_and_its_value_is_every_calls_first_argument(k):
    k.run("def load():\n    import os\n    print('loading')\n    return {'pid': os.getpid(), 'weights': 3}\n"
          "@jupyter_gpu.function(gpu='cpu', setup=load)\ndef predict(model, x):\n    return model['weights'] * x, model['pid']")
    first = k.run("print(predict.remote(2))")
    again = k.run("print(predict.remote(5))")
    assert first.stdout().startswith("loading\n(6, ") and again.stdout().startswith("(15, ")  # loaded once
    assert first.stdout().split(", ")[1] == again.stdout().split(", ")[1]  # the same worker's value
    assert k.run("print(list(predict.map([1, 2]))[1][0])").stdout() == "6\n"
    assert k.run("print(predict.local(4)[0])").stdout() == "loading\n12\n"  # here: made here, once


def test_every_call_is_a_ledger_row_naming_the_function(k, kernel_env):
    import sqlite3
    import time

    k.run("@jupyter_gpu.function(gpu='cpu')\ndef ledgered(x):\n    return x\n")
    k.run("for i in range(3):\n    ledgered.remote(i)")
    ledger = kernel_env["JUPYTER_GPU_LEDGER"]

    def rows():
        with sqlite3.connect(ledger) as db:
            return db.execute("SELECT function, status, run_s FROM cells WHERE function LIKE 'ledgered@%'").fetchall()

    deadline = time.monotonic() + 30  # the backend writes its ledger in batches, a lane call once reported
    while len(rows()) < 3 and time.monotonic() < deadline:
        k.run("%gpu status")  # asks the backend, which settles what its workers owe first (lane_cells.settle)
    got = rows()
    assert len(got) == 3 and {r[1] for r in got} == {"ok"} and len({r[0] for r in got}) == 1, got


def test_remote_gen_yields_each_value_as_the_worker_yields_it(k):
    k.run("@jupyter_gpu.function(gpu='cpu')\ndef count(n, wait_for=None):\n    import socket\n"
          "    for i in range(n):\n        yield i * 10\n        if wait_for and i == 0:\n"
          "            socket.create_connection(('127.0.0.1', wait_for)).recv(1)  # until the test lets it go on\n")
    assert k.run("print(list(count.remote_gen(4)))").stdout() == "[0, 10, 20, 30]\n"
    # the first value arrives while the worker's generator still runs (it waits for us before the second)
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        cell = k.submit(f"for v in count.remote_gen(3, wait_for={port}):\n    print('got', v, flush=True)")
        assert k.wait_until(lambda: "got 0" in cell.stdout(), 60)
        conn, _ = listener.accept()  # the worker waits on us: it has not yielded the second value yet
        assert "got 10" not in cell.stdout()
        conn.send(b"x")
        conn.close()
        assert k.wait_until(lambda: cell.done, 60) and cell.stdout() == "got 0\ngot 10\ngot 20\n"
    # stopping early stops the worker's generator; the worker stays usable
    cell = k.run("for v in count.remote_gen(10**9):\n    if v >= 20:\n        break\nprint('stopped at', v)")
    assert cell.stdout() == "stopped at 20\n"
    assert k.run("print(square.remote(2))").stdout() == "squaring 2\n4\n"


def test_a_value_that_cannot_come_back_stays_on_the_worker_and_goes_on_by_reference(k):
    k.run("@jupyter_gpu.function(gpu='cpu')\ndef make_lock():\n    import threading\n    return threading.Lock()\n"
          "@jupyter_gpu.function(gpu='cpu')\ndef kind(x):\n    return type(x).__name__, x.locked()")
    cell = k.run("r = make_lock.remote()\nprint(r)")
    assert cell.stdout().startswith("<remote lock on cpu")
    assert k.run("print(kind.remote(r))").stdout() == "('lock', False)\n"  # the worker's own object
    assert k.run("%%gpu\nprint(type(r).__name__, r.acquire())").stdout() == "lock True\n"
    assert k.run("print(kind.remote(r))").stdout() == "('lock', True)\n"  # the same object, acquired above


def test_map_fans_out_over_max_workers_in_input_order(k):
    k.run("@jupyter_gpu.function(gpu='cpu', max_workers=2)\ndef tagged(x):\n    import os\n    return x, os.getpid()")
    cell = k.run("out = list(tagged.map(range(3000)))\nprint([x for x, _ in out] == list(range(3000)), "
                 "len({p for _, p in out}))", timeout=180)
    assert cell.stdout() == "True 2\n"  # every item, in order, from two workers
    (f,) = cell.footers()
    assert f["calls"] == 12  # 3000 items in batches of 256, each a call, summed in the cell's footer
    # the kernel's own worker is one of them; the other stays warm for the next map
    again = k.run("print(len({p for _, p in tagged.map(range(600))}))", timeout=120)
    assert again.stdout() == "2\n" and again.footers()[0]["cold"] is False


def test_the_stop_button_during_a_fanned_out_map_stops_every_worker_and_sends_no_more(k):
    k.run("@jupyter_gpu.function(gpu='cpu', max_workers=2)\ndef slow_item(x):\n    import time\n"
          "    print('item', x, flush=True)\n    time.sleep(0.2)\n    return x")
    cell = k.submit("r = slow_item.map(range(100000))\nfor v in r:\n    pass")
    assert k.wait_until(lambda: "item 0\n" in cell.stdout() and "item 256\n" in cell.stdout(), 120)  # both working
    k.interrupt()
    assert k.wait_until(lambda: cell.done, 60), "the map did not stop"
    assert cell.reply["content"]["ename"] == "KeyboardInterrupt"
    printed = cell.stdout().count("item ")
    assert printed < 2000  # not the rest of the 100,000
    after = k.run("print(sorted({x for x in slow_item.map(range(4))}))", timeout=60)
    assert after.stdout().endswith("[0, 1, 2, 3]\n")


def test_remote_inside_a_gpu_cell_says_to_call_the_function_itself(k):
    cell = k.run("%%gpu\nsquare.remote(2)", ok=False)
    assert cell.reply["content"]["ename"] == "RuntimeError"
    assert "call the function itself" in traceback_text(cell) + cell.reply["content"]["evalue"]
    assert k.run("%%gpu\nprint(square(3))").stdout() == "squaring 3\n9\n"  # as a plain function there


NAP = ("@jupyter_gpu.function(gpu='cpu'{more})\ndef nap(x):\n    import time\n    time.sleep(0.002)\n"
       "    if x % 250 == 7:\n        raise ValueError(x)\n    return x")  # ~0.5 s a batch of 256
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
LINE = re.compile(r"map nap: (\d+) queued · (\d+) starting · (\d+) running · (\d+) done · (\d+) failed · \$[\d.]+ so far$")


def progress_lines(cell) -> list:
    """The map's progress display as it was shown and updated: (msg_type, its data)."""
    return [(e.msg["msg_type"], e.msg["content"]["data"]) for e in cell.iopub
            if e.msg["msg_type"] in ("display_data", "update_display_data")
            and e.msg["content"]["data"].get("text/plain", "").startswith("map nap")]


def test_a_maps_progress_line_counts_each_state_and_ends_all_done(kernel_env):
    """Without ipywidgets: one text line updated in place, with the items queued, starting (a cold
    worker), running, done and failed, ending with every item done or failed."""
    k = LiveKernel(kernel_env)  # a fresh kernel: its first map waits for a cold start
    try:
        k.run("import sys\nsys.modules['ipywidgets'] = None  # (a kernel without ipywidgets)")
        k.run(LOAD)
        k.run(DEFINE.split("@")[0] + NAP.format(more=""))
        cell = k.run("r = nap.map(range(1000), return_exceptions=True)\nout = list(r)\n"
                     "print(sum(isinstance(v, ValueError) for v in out), sorted(r.failed))", timeout=180)
    finally:
        k.shutdown()
    assert cell.stdout() == "4 [7, 257, 507, 757]\n"
    assert cell.stderr().count("nap.map: item ") == 4  # each failure said once, with its index
    shown = progress_lines(cell)
    assert [t for t, _ in shown][:1] == ["display_data"] and {t for t, _ in shown[1:]} == {"update_display_data"}
    assert all(WIDGET_VIEW not in d and "text/html" in d for _, d in shown)
    counts = [tuple(map(int, LINE.match(d["text/plain"]).groups())) for _, d in shown]
    assert counts[-1] == (0, 0, 0, 996, 4), counts  # the end: every item done or failed
    assert counts[0][1] == 256, counts  # shown at once: its first batch waits for the cold worker
    assert any(c[2] == 256 for c in counts), counts  # a batch running
    assert all(sum(c) <= 1000 for c in counts)
    done = [c[3] + c[4] for c in counts]
    assert done == sorted(done) and len(set(done)) > 2, counts  # counted up, batch by batch


def widget_states(cell) -> dict:
    """comm id -> a widget's state as its comm messages left it (open, then each update)."""
    states: dict = {}
    for e in cell.iopub:
        t, c = e.msg["msg_type"], e.msg["content"]
        if t == "comm_open" and c.get("target_name") == "jupyter.widget":
            states[c["comm_id"]] = [dict(c["data"]["state"])]
        elif t == "comm_msg" and c["comm_id"] in states and c["data"].get("method") == "update":
            states[c["comm_id"]].append({**states[c["comm_id"]][-1], **c["data"]["state"]})
    return states


def test_a_maps_progress_is_a_widget_whose_last_state_says_all_done(k):
    """With ipywidgets in a Jupyter kernel: a bar and a label of the counts, live through the
    widgets' comm messages, whose display still carries the counts as text (nbclient, a terminal)."""
    k.run(NAP.format(more=", max_workers=2"))
    cell = k.run("out = list(nap.map(range(2000), return_exceptions=True))\n"
                 "print(sum(isinstance(v, ValueError) for v in out))", timeout=180)
    assert cell.stdout() == "8\n"
    shown = progress_lines(cell)
    assert [t for t, _ in shown] == ["display_data", "update_display_data"]  # shown, and its text made final
    model = shown[0][1][WIDGET_VIEW]["model_id"]
    assert shown[-1][1][WIDGET_VIEW]["model_id"] == model
    assert LINE.match(shown[-1][1]["text/plain"]).groups() == ("0", "0", "0", "1992", "8")
    states = widget_states(cell)
    assert states[model][-1]["_model_name"] == "HBoxModel"
    (bar,) = [s for s in states.values() if s[-1]["_model_name"] == "IntProgressModel"]
    (label,) = [s for s in states.values() if s[-1]["_model_name"] == "HTMLModel"]
    assert bar[-1]["value"] == bar[-1]["max"] == 2000 and bar[-1]["bar_style"] == "danger"  # 8 failed
    assert "0 queued · 0 starting · 0 running · 1992 done · 8 failed" in label[-1]["value"]
    live = [tuple(map(int, m.groups())) for m in (LINE.search(html.unescape(s["value"]).replace("</span>", ""))
                                                  for s in label) if m]
    assert len(live) > 2 and any(c[0] > 0 for c in live) and any(c[2] > 0 for c in live), live  # queued, running


DIFFERENTIAL = {
    "print-and-return": ("def fn(a, b=2):\n    print('a is', a)\n    return a * b", "7, b=3"),
    "numpy": ("def fn(n):\n    import numpy as np\n    x = np.arange(n).reshape(2, -1)\n    print(x.sum(axis=0))\n"
              "    return x.T @ x", "6"),
    "display": ("def fn(n):\n    from IPython.display import display, HTML\n    display(HTML(f'<b>{n}</b>'))\n"
                "    return {'n': n, 'sq': [i * i for i in range(n)]}", "4"),
    "stderr-and-none": ("def fn():\n    import sys\n    print('warn', file=sys.stderr)", ""),
    "closure-over-a-global": ("SCALE = 10\ndef fn(x):\n    return [SCALE * v for v in x]", "[1, 2, 3]"),
    "exception-message": ("def fn(d):\n    return d['missing']", "{'present': 1}"),
}


@pytest.mark.parametrize("case", sorted(DIFFERENTIAL))
def test_a_call_shows_what_the_same_call_here_shows(k, case):
    source, args = DIFFERENTIAL[case]
    k.run(source.replace("def fn", "@jupyter_gpu.function(gpu='cpu')\ndef fn"))

    def seen(cell) -> list:
        out = []
        for e in cell.iopub:
            t, c = e.msg["msg_type"], e.msg["content"]
            if t == "stream":
                out.append((t, c["name"], c["text"]))
            elif t in ("display_data", "execute_result") and FOOTER_MIME not in c["data"]:
                out.append((t, c["data"].get("text/html") or c["data"].get("text/plain")))
            elif t == "error":
                out.append((t, c["ename"], c["evalue"]))
        return out

    here = k.run(f"fn.local({args})", ok=False)
    there = k.run(f"fn.remote({args})", ok=False)
    assert seen(there) == seen(here), (seen(here), seen(there))
    assert here.reply["content"]["status"] == there.reply["content"]["status"]


CLS = """\
@jupyter_gpu.cls(gpu="cpu")
class Model:
    def __init__(self, scale):
        self.scale = scale
        self.loads = 0

    @jupyter_gpu.enter
    def load(self):
        import os
        self.loads += 1
        self.pid = os.getpid()

    def predict(self, x):
        if x < 0:
            raise ValueError(f"no negatives: {x}")
        return x * self.scale, self.loads, self.pid

    def describe(self):
        return f"scale {self.scale}, loaded {self.loads}x"
"""


def test_a_cls_instance_is_made_once_per_worker_and_shared_by_its_methods(k):
    k.run(CLS)
    cell = k.run("import os\nm = Model(3)\na = m.predict.remote(2)\nb = m.predict.remote(5)\n"
                 "print(a[0], b[0], a[1], b[1], a[2] == b[2], a[2] != os.getpid())\nprint(m.describe.remote())\n"
                 "print([v for v, _, _ in m.predict.map(range(4))])\nprint(m.predict.local(4)[:2], m.describe.local())\n"
                 "print(m.predict.spawn(7).get()[:2])")
    assert cell.stdout().splitlines() == [
        "6 15 1 1 True True",  # @enter ran once on the worker; both calls used that instance
        "scale 3, loaded 1x",  # another method of the same instance: the same object there
        "[0, 3, 6, 9]",
        "(12, 1) scale 3, loaded 1x",  # .local: one instance made here
        "(21, 1)",  # a spawned method call: its own worker's instance, made there once
    ]
    err = k.run("m.predict.remote(-1)", ok=False)
    tb = traceback_text(err)
    assert err.reply["content"]["ename"] == "ValueError" and "no negatives: -1" in tb
    assert "Cell In[" in tb and 'raise ValueError(f"no negatives: {x}")' in tb, tb  # the class's cell, its line
