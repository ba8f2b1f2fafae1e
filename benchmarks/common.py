"""Shared helpers of the benchmark suite: statistics, result files, and a real ipykernel driven
by jupyter_client with bounded waits and thorough clean-up.

Every wait has a timeout; a kernel that does not answer is interrupted, then killed, together with
every process it started (ipcluster controller/engines, the embedded jupyter-gpu backend and its
workers).  Benchmarks report ratios measured in the same run, never absolute claims.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import zmq
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
FOOTER_MIME = "application/vnd.jupyter-gpu.execution+json"


# ----------------------------------------------------------------------------- statistics
def percentile(sorted_xs, q):
    """Linear-interpolated percentile (q in [0, 100]) of an already sorted list."""
    if not sorted_xs:
        return float("nan")
    k = (len(sorted_xs) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (k - lo)


def stats(xs, unit):
    """min/median/p99/max/mean of samples, in `unit`; `n` is the raw sample count."""
    s = sorted(xs)
    if not s:
        return {"unit": unit, "n": 0}
    return {"unit": unit, "n": len(s), "min": s[0], "median": statistics.median(s),
            "p99": percentile(s, 99), "max": s[-1], "mean": statistics.fmean(s)}


def fmt_stats(name, st, width=28):
    if not st.get("n"):
        return f"  {name:<{width}} (no samples)"
    u = st["unit"]
    return (f"  {name:<{width}} min {st['min']:9.3f}  median {st['median']:9.3f}  "
            f"p99 {st['p99']:9.3f} {u}  (n={st['n']})")


def ratio(a, b):
    return a / b if b else float("nan")


def verdict(ok):
    return "PASS" if ok else "MISS"


# ----------------------------------------------------------------------------- results
def environment():
    return {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "python": platform.python_version(), "implementation": platform.python_implementation(),
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "mem_total_gb": round(psutil.virtual_memory().total / 1e9, 1),
            "load_avg_1m": os.getloadavg()[0], "argv": sys.argv[1:], "git": _git()}


def _git():
    """Commit of the code measured, and whether the working tree had changes."""
    import subprocess
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=HERE, capture_output=True, text=True,
                                        timeout=10).stdout.strip()
        return {"commit": run("rev-parse", "HEAD"), "dirty": bool(run("status", "--porcelain"))}
    except Exception:
        return None


def write_result(name, payload):
    """Write benchmarks/results/<name>.json atomically and return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": name, **environment(), **payload}
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path.relative_to(HERE.parent)}")
    return path


# ----------------------------------------------------------------------------- clean-up
_CLEANUPS = []


def on_cleanup(fn):
    """Run fn at exit (also on SIGTERM/SIGHUP), newest first, each at most once."""
    _CLEANUPS.append(fn)
    return fn


def run_cleanups():
    while _CLEANUPS:
        fn = _CLEANUPS.pop()
        try:
            fn()
        except Exception as e:  # clean-up must go on
            print(f"[cleanup] {fn!r}: {e!r}", file=sys.stderr)


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)  # unwinds `finally` blocks, then atexit runs the rest


atexit.register(run_cleanups)
for _sig in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(_sig, _on_signal)


def kill_tree(procs, grace=3.0):
    """Terminate processes (psutil.Process list), then kill the survivors."""
    procs = [p for p in procs if p.is_running()]
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=grace)


def _alive(p):
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def descendants(pid):
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


# ----------------------------------------------------------------------------- kernel
class CellError(RuntimeError):
    def __init__(self, code, content):
        self.ename = content.get("ename", "?")
        self.evalue = content.get("evalue", "")
        tb = "\n".join(content.get("traceback", []))
        super().__init__(f"cell failed: {self.ename}: {self.evalue}\n--- cell ---\n{code}\n"
                         f"--- traceback ---\n{_strip_ansi(tb)[-3000:]}")


class CellTimeout(RuntimeError):
    pass


def _strip_ansi(s):
    return re.sub(r"\x1b\[[0-9;]*m", "", s)


class Reply:
    """What one execute_request produced: the reply, its iopub messages, and its wall time."""

    def __init__(self, code, reply, iopub, seconds):
        self.code, self.reply, self.iopub, self.seconds = code, reply, iopub, seconds

    @property
    def ok(self):
        return self.reply["content"].get("status") == "ok"

    def stream_text(self, name="stdout"):
        return "".join(m["content"]["text"] for m in self.iopub
                       if m["msg_type"] == "stream" and m["content"].get("name") == name)

    def footers(self):
        return [m["content"]["data"][FOOTER_MIME] for m in self.iopub
                if m["msg_type"] in ("display_data", "update_display_data")
                and FOOTER_MIME in m["content"].get("data", {})]


class Kernel:
    """A real ipykernel (this interpreter) started with jupyter_client, driven synchronously.

    `execute()` returns when both the execute_reply and the iopub `status: idle` of that request
    have arrived, collecting the request's iopub messages; it raises CellTimeout after `timeout`
    seconds (the kernel is interrupted first so it stays usable when it can)."""

    def __init__(self, name="bench", env=None, gpu_isolation=True, startup_timeout=60, provisioner=None):
        """``provisioner``: the kernelspec's (e.g. "jupyter-gpu": the jupyter-gpu kernel's, which starts
        the embedded backend with the kernel); None: jupyter_client's default."""
        self.name = name
        self._tmp = tempfile.mkdtemp(prefix=f"jg-bench-{name}-")
        spec_dir = Path(self._tmp, "kernels", "bench-python")
        spec_dir.mkdir(parents=True)
        (spec_dir / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "bench", "language": "python",
            **({"metadata": {"kernel_provisioner": {"provisioner_name": provisioner}}} if provisioner else {})}))
        kernel_env = dict(os.environ if env is None else env)
        kernel_env["PYTHONUNBUFFERED"] = "1"
        if gpu_isolation and not kernel_env.get("JUPYTER_GPU_URL"):
            # an embedded backend of our own, that leaves soon after the kernel
            self.runtime_dir = os.path.join(self._tmp, "jupyter-gpu-runtime")
            kernel_env["JUPYTER_GPU_RUNTIME_DIR"] = self.runtime_dir
            kernel_env.setdefault("JUPYTER_GPU_EMBEDDED_GRACE", "2")
            kernel_env.setdefault("JUPYTER_GPU_LEDGER", os.path.join(self._tmp, "ledger.sqlite3"))
        else:
            self.runtime_dir = None
        self.km = KernelManager(kernel_name="bench-python",
                                kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec_dir.parent)]),
                                connection_file=os.path.join(self._tmp, "kernel.json"))
        self._closed = False
        self.broken = False
        self._tracked = {}
        on_cleanup(self.close)
        self.log_path = os.path.join(self._tmp, "kernel.log")  # the kernel's (and backend's) stderr
        self._log = open(self.log_path, "wb")
        self.km.start_kernel(env=kernel_env, cwd=self._tmp, stdout=self._log, stderr=self._log)
        self.pid = self.km.provisioner.process.pid if self.km.provisioner else None
        self.kc = self.km.client()
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=startup_timeout)
        except RuntimeError as e:
            self.close()
            raise RuntimeError(f"kernel {name!r} did not start within {startup_timeout} s: {e}\n"
                               f"{self.log_tail()}")
        self._shell = self.kc.shell_channel
        self._iopub = self.kc.iopub_channel
        self._poller = zmq.Poller()
        self._poller.register(self._shell.socket, zmq.POLLIN)
        self._poller.register(self._iopub.socket, zmq.POLLIN)
        self.drain_iopub()

    # -- running cells
    def drain_iopub(self, settle=0.05):
        with contextlib.suppress(Exception):
            while True:
                self._iopub.get_msg(timeout=settle)

    def execute(self, code, timeout=60.0, check=True, on_iopub=None, keep_iopub=True):
        """Run `code`; return a Reply. on_iopub(msg) sees each of the request's iopub messages."""
        t0 = time.perf_counter()
        msg_id = self.kc.execute(code, store_history=False, allow_stdin=False)
        deadline = t0 + timeout
        reply, idle, iopub = None, False, []
        shell_sock, iopub_sock = self._shell.socket, self._iopub.socket
        while reply is None or not idle:
            left = deadline - time.perf_counter()
            if left <= 0:
                self._recover(msg_id, reply is not None, idle)
                raise CellTimeout(f"[{self.name}] no {'execute_reply' if reply is None else 'idle status'}"
                                  f" after {timeout:.0f} s for cell:\n{code[:400]}\n{self.log_tail()}")
            events = dict(self._poller.poll(min(left, 1.0) * 1000))
            if iopub_sock in events:  # drain iopub first: status idle follows the reply
                while iopub_sock.poll(0):
                    m = self._iopub.get_msg(timeout=0)
                    if m["parent_header"].get("msg_id") != msg_id:
                        continue
                    if m["msg_type"] == "status":
                        idle = idle or m["content"]["execution_state"] == "idle"
                        continue
                    if on_iopub is not None:
                        on_iopub(m)
                    if keep_iopub:
                        iopub.append(m)
            if shell_sock in events:
                while shell_sock.poll(0):
                    m = self._shell.get_msg(timeout=0)
                    if m["parent_header"].get("msg_id") == msg_id:
                        reply = m
        seconds = time.perf_counter() - t0
        r = Reply(code, reply, iopub, seconds)
        if check and not r.ok:
            raise CellError(code, reply["content"])
        return r

    def _recover(self, msg_id, got_reply, idle, wait=15.0):
        """After a timeout: interrupt, and wait (bounded) for the stuck request to finish."""
        if got_reply and not idle:
            return
        try:
            self.km.interrupt_kernel()
        except Exception:
            return
        deadline = time.perf_counter() + wait
        while time.perf_counter() < deadline:
            try:
                m = self._shell.get_msg(timeout=0.5)
            except Exception:
                continue
            if m["parent_header"].get("msg_id") == msg_id:
                self.drain_iopub(0.2)
                return
        self.broken = True

    def value(self, expr, timeout=60.0):
        """Evaluate expr in the kernel and return it (must be JSON-serialisable)."""
        marker = uuid.uuid4().hex
        r = self.execute(f"import json as _j\nprint({marker!r} + _j.dumps({expr}))", timeout=timeout)
        for line in r.stream_text().splitlines():
            if line.startswith(marker):
                return json.loads(line[len(marker):])
        raise RuntimeError(f"no value for {expr!r}: {r.stream_text()[:400]!r}")

    def log_tail(self, nbytes=3000):
        """The end of the kernel process's stdout/stderr (where a failing extension may talk)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log_path) - nbytes))
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        lines = [l for l in text.splitlines() if "running over TCP without encryption" not in l]
        return "--- kernel log (tail) ---\n" + "\n".join(lines) if any(lines) else ""

    # -- clean-up
    def track_children(self):
        """Remember the kernel's current descendants (and the embedded backend's), so that close()
        ends them even if they were re-parented meanwhile.  Call it outside timed regions."""
        procs = descendants(self.pid) if self.pid else []
        for pid in self._runtime_pids():
            with contextlib.suppress(psutil.Error):
                procs += [psutil.Process(pid)] + descendants(pid)
        for p in procs:
            self._tracked.setdefault(p.pid, p)

    def _runtime_pids(self):
        if not self.runtime_dir:
            return []
        pids = []
        for f in Path(self.runtime_dir).glob("*.json"):
            with contextlib.suppress(Exception):
                pids.append(int(json.loads(f.read_text()).get("pid", 0)))
        return [p for p in pids if p and p != os.getpid()]

    def close(self):
        if self._closed:
            return
        self._closed = True
        self.track_children()
        with contextlib.suppress(Exception):
            self.kc.stop_channels()
        try:
            self.km.shutdown_kernel(now=False)
        except Exception:
            with contextlib.suppress(Exception):
                self.km.shutdown_kernel(now=True)
        # children of the kernel (ipcluster, workers) and the embedded backend: give them a
        # moment to leave by themselves (grace period), then end them.
        self.track_children()  # the backend may have been started late: pick it up too
        procs = list(self._tracked.values())
        deadline = time.time() + 4.0
        while time.time() < deadline and any(_alive(p) for p in procs):
            time.sleep(0.2)
        kill_tree(procs)
        self._log.close()
        shutil.rmtree(self._tmp, ignore_errors=True)


def embedded_ready(kernel, timeout: float = 180.0) -> None:
    """Start the kernel's embedded backend (a first `%%gpu` cell) and wait, on the backend's own
    `/api/runtime?wait=` (not a sleep), until cold starts are zygote forks."""
    kernel.execute("%%gpu\nx = 1", timeout=timeout)
    kernel.execute("import json, urllib.request\nfrom jupyter_gpu._client.embedded import ensure_backend\n"
                   "u, t = ensure_backend()\nreq = urllib.request.Request(u + '/api/runtime?wait=120', "
                   "headers={'Authorization': 'token ' + t})\n"
                   "assert json.load(urllib.request.urlopen(req, timeout=130))['ready']", timeout=150)


def serve_backend(tmp, token, runtime="local"):
    """A `jupyter-gpu serve` of our own (its ledger, log and runtime file in `tmp`); returns its URL."""
    import subprocess

    info = os.path.join(tmp, f"{runtime}.json")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_gpu_backend", "--runtime", runtime, "--token", token, "--runtime-file", info,
         "--ledger", os.path.join(tmp, f"{runtime}.sqlite3"), "--keep-warm", "600"],
        stdout=open(os.path.join(tmp, f"{runtime}.log"), "wb"), stderr=subprocess.STDOUT,
    )
    on_cleanup(lambda: (proc.terminate(), proc.wait(60)))
    deadline = time.monotonic() + 120
    while not os.path.exists(info):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{runtime} backend did not start; see {tmp}/{runtime}.log")
        time.sleep(0.05)  # another process's file: nothing to wait on but the file
    with open(info) as f:
        return proc, json.load(f)["url"]


def run_main(main):
    """Run a benchmark's main(): its exit status, or 1 with the traceback on any failure."""
    import traceback

    try:
        sys.exit(main())
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        sys.exit(1)


def banner(title):
    print("=" * 78)
    print(title)
    print("=" * 78, flush=True)
