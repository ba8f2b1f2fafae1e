"""`jupyter-gpu run`: execute notebooks headless in CI, with a budget, reports and honest exit codes.

Each notebook runs with nbclient in a real kernel (the `%%gpu` cells reach the backend the kernel
finds: `--url`/`--token`, `JUPYTER_GPU_URL`/`JUPYTER_GPU_TOKEN`, else the embedded one).  Cell
output is streamed to the terminal as it arrives; the executed notebook is written also when it
failed; the exit code says what went wrong, most serious first (see EXIT_* and the README).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from jupyter_gpu import errors
from jupyter_gpu.cost.limit import RUN_BUDGET_ENV
from jupyter_gpu._wire.devices import FALLBACK_ENV
from jupyter_gpu.cost import saved
from jupyter_gpu.functions import recorded
from jupyter_gpu.notebook.cell_options import positive
from jupyter_gpu._wire import settings
from jupyter_gpu._wire.wsclient import https_context

EXIT_OK = 0  # every notebook passed (or failed where it is marked to), within the budget
EXIT_CELL = 1  # a cell failed (an exception, a timeout), or a notebook marked to fail passed
EXIT_USAGE = 2  # bad arguments (argparse's own code)
EXIT_BUDGET = 3  # the run cost more than --max-cost (or the backend refused a cell over budget)
EXIT_INFRA = 4  # backend unreachable, token empty or refused, worker lost, kernel died
SEVERITY = (EXIT_INFRA, EXIT_BUDGET, EXIT_CELL)  # the run's code is the most serious one seen

# `ename` of a cell error that says the infrastructure failed, not the notebook's code
INFRA_ENAMES = {cls.__name__ for cls in (
    errors.GpuError, errors.ConnectionLost, errors.AuthError, errors.ProtocolMismatch,
    errors.NoSuchDevice, errors.WorkerLost, errors.WorkerStartFailed,
)} | {"DeadKernelError"}
BUDGET_ENAMES = {errors.BudgetExceeded.__name__}  # the backend's refusal of a cell over its budget
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
META = "jupyter_gpu"  # notebook metadata key: {"expect_failure": "why"} marks a notebook that must fail


class RunOverBudget(Exception):
    """The run's %%gpu cells cost more than its --max-cost: the notebook stops after the cell (the
    backend's own refusal of a cell is errors.BudgetExceeded)."""


@dataclass
class Outcome:
    path: str
    out_path: str | None = None
    status: str = "not run"  # passed | failed | budget | infra | xfailed | xpassed | not run
    reason: str = ""  # one line
    cell: int | None = None  # index of the failing cell
    source: str = ""
    ename: str = ""
    traceback: str = ""
    seconds: float = 0.0
    cost: float = 0.0
    gpu_cells: int = 0
    fell_back: list = field(default_factory=list)  # GPU specs that ran on the fallback device
    nb: object = None

    @property
    def code(self) -> int:
        return {"failed": EXIT_CELL, "xpassed": EXIT_CELL, "budget": EXIT_BUDGET,
                "infra": EXIT_INFRA}.get(self.status, EXIT_OK)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("notebooks", nargs="+", help="notebooks to execute, in order")
    ap.add_argument("--url", help="backend URL (default: $JUPYTER_GPU_URL, else the embedded backend)")
    ap.add_argument("--token", help="backend token (default: $JUPYTER_GPU_TOKEN)")
    ap.add_argument("--embedded", action="store_true", help="use the embedded backend even if $JUPYTER_GPU_URL is set")
    ap.add_argument("--gpu-fallback", metavar="TYPE", help="run %%%%gpu cells on TYPE (e.g. cpu) when the GPU type they ask for is not offered")
    ap.add_argument("--max-cost", type=positive, metavar="USD", help="budget of the whole run in USD; a notebook stops at the cell that breaks it (a running cell is interrupted)")
    ap.add_argument("--timeout", type=int, default=600, help="per-cell timeout in seconds (default 600)")
    ap.add_argument("--report", action="append", default=[], metavar="md|json|html",
                    help="write the cost report as OUTPUT/report.FMT (repeatable, or md,json)")
    ap.add_argument("--junit", metavar="FILE", help="write JUnit XML: one test case per notebook")
    ap.add_argument("--output", default="notebooks/out", help="where executed notebooks go (default notebooks/out)")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="inject NAME = VALUE after the cell tagged `parameters` (a Python literal, else a string)")
    ap.add_argument("--kernel", default=None, help="kernel name (default: the notebook's, else python3)")


# -- parameters (papermill's convention) -------------------------------------------------------
def parse_value(text: str):
    """A Python literal when it parses as one ('3', '0.5', "[1, 2]", 'True'), else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def inject_parameters(nb, params: dict) -> None:
    """Put `name = value` lines in a cell tagged `injected-parameters` right after the cell tagged
    `parameters` (at the top when there is none), replacing one injected before, as papermill does."""
    import nbformat

    if not params:
        return
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    at = next((i + 1 for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])), 0)
    source = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(source.rstrip("\n"))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(at, cell)
    nb.metadata.setdefault(META, {})["parameters"] = json.loads(json.dumps(params, default=repr))  # {1, 2}: its repr


# -- the backend, checked before anything runs ---------------------------------------------------
def check_backend(url: str, token: str, timeout: float = 10.0) -> dict:
    """Health and an authenticated call; AuthError / ConnectionLost with a message a CI log can use."""
    if not token:
        raise errors.AuthError(f"no token for the backend at {url}: set JUPYTER_GPU_TOKEN (it is empty or unset) or pass --token")

    def get(path: str) -> dict:
        req = urllib.request.Request(url + path, headers={"Authorization": f"token {token}"})
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=https_context(url)) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            if e.code in (401, 403):
                raise errors.AuthError(f"the backend at {url} refused the token (HTTP {e.code} on {path}): "
                                       "check JUPYTER_GPU_TOKEN / --token") from None
            raise errors.ConnectionLost(f"the backend at {url} answered HTTP {e.code} on {path}") from None
        except (OSError, ValueError) as e:
            raise errors.ConnectionLost(f"cannot reach the backend at {url}: {e}") from None

    health = get("/api/health")
    if not health.get("ok"):
        raise errors.ConnectionLost(f"the backend at {url} is not healthy: {health}")
    return get("/api/status")


# -- one notebook ----------------------------------------------------------------------------------
def _client_class():
    from jupyter_gpu.ci.executor import NotebookClient  # nbclient, without its stall on widgets

    class StreamingClient(NotebookClient):
        """nbclient that also shows every output on the terminal as it arrives."""

        def process_message(self, msg, cell, cell_index):
            try:
                self.terminal(msg)
            except Exception:  # the terminal is a view: never let it break the run
                pass
            return super().process_message(msg, cell, cell_index)

    return StreamingClient


class Terminal:
    """Writes what the notebook shows, as it arrives: streams raw (so `\\r` progress works), other
    outputs as their text, footers as their cost line; ANSI colour only on a terminal."""

    def __init__(self, out=None):
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.live = None  # the cell's last waiting phase shown (queued #n, cold start)

    def write(self, text: str) -> None:
        self.out.write(text if self.tty else ANSI_RE.sub("", text))
        self.out.flush()

    def __call__(self, msg: dict) -> None:
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            target = sys.stderr if content.get("name") == "stderr" else self.out
            target.write(content["text"])
            target.flush()
        elif kind in ("display_data", "execute_result", "update_display_data"):
            data = content.get("data", {})
            footer = saved.record(data)
            if isinstance(footer, dict) and footer.get("live"):  # the live status line: once per wait
                key = (footer.get("phase"), footer.get("position"), footer.get("detail"))
                if key != self.live and key[0] != "running":
                    self.write(f"   {data.get('text/plain', '')}\n")
                self.live = key
                return
            if kind == "update_display_data":
                return  # a display updated in place (a live plot): shown once, as it first came
            text = data.get("text/plain") or ", ".join(sorted(data)) or ""
            if text:
                prefix = "   " if footer else ("Out: " if kind == "execute_result" else "")
                lines = text.splitlines()
                more = f"\n... ({len(lines) - 20} more lines)" if len(lines) > 20 else ""
                self.write(prefix + "\n".join(lines[:20]) + more + "\n")
        elif kind == "error":
            self.write("\n".join(content.get("traceback") or [f"{content.get('ename')}: {content.get('evalue')}"]) + "\n")


def _stopped_on_cost(cell) -> bool:
    """The kernel interrupted the cell at its cost limit (cost/limit.py says so on the cell's stderr):
    with --max-cost, the run's budget passed on to the kernel ($JUPYTER_GPU_RUN_BUDGET)."""
    return any(o.get("name") == "stderr" and "jupyter-gpu: stopping the cell:" in o.get("text", "")
               and "past --max-cost" in o.get("text", "") for o in cell.get("outputs", []))


def _label(source: str) -> str:
    first = next((line.strip() for line in source.splitlines() if line.strip()), "")
    return first if len(first) <= 60 else first[:57] + "..."


def _out_path(path: str, output: str, taken: set) -> str:
    base = os.path.basename(path)
    stem, ext = os.path.splitext(base)
    out, n = os.path.join(output, base), 2
    while out in taken:  # two notebooks with one name from two folders: both kept
        out, n = os.path.join(output, f"{stem}-{n}{ext}"), n + 1
    if os.path.abspath(out) == os.path.abspath(path):  # --output is the notebook's own folder
        out = os.path.join(output, f"{stem}.executed{ext}")
    taken.add(out)
    return out


GPU_SPEC = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]*(,[A-Za-z0-9][A-Za-z0-9_.:\-]*)*")


def notebook_defaults(nb) -> dict:
    """The kernel environment for the device choice saved in the notebook (by the JupyterLab
    sidebar: ``metadata.jupyter_gpu.gpu`` / ``keep_warm``; ``image`` by hand): it applies as
    `%gpu config` would.  A notebook is untrusted input: anything else than a GPU list, a duration or
    an image name is refused."""
    from jupyter_gpu._wire.pools import NAME_RE
    from jupyter_gpu.notebook.magics import DEFAULT_GPU_ENV, DEFAULT_IMAGE_ENV, DEFAULT_KEEP_WARM_ENV, duration

    meta = nb.metadata.get(META) or {}
    out = {}
    gpu, keep_warm = meta.get("gpu"), meta.get("keep_warm")
    if gpu is not None:
        if not isinstance(gpu, str) or len(gpu) > 200 or not GPU_SPEC.fullmatch(gpu):
            raise ValueError(f"metadata.{META}.gpu is not a GPU type list: {gpu!r}")
        out[DEFAULT_GPU_ENV] = gpu
    if keep_warm is not None:
        duration(keep_warm)  # ValueError names the bad value
        out[DEFAULT_KEEP_WARM_ENV] = str(keep_warm)
    image = meta.get("image")
    if image is not None:
        if not isinstance(image, str) or not NAME_RE.fullmatch(image):
            raise ValueError(f"metadata.{META}.image is not a worker image name: {image!r}")
        out[DEFAULT_IMAGE_ENV] = image
    return out


def run_notebook(path: str, index: int, total: int, args, env: dict, params: dict, spent: list, taken: set) -> Outcome:
    import nbformat
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    o = Outcome(path)
    t0 = time.monotonic()
    term = Terminal()
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:  # not a notebook: the notebook failed, not the infrastructure
        o.status, o.reason = "failed", f"cannot read {path}: {e}"
        return o
    o.nb = nb
    inject_parameters(nb, params)
    code_cells = sum(1 for c in nb.cells if c.cell_type == "code" and c.source.strip())
    seen = {"n": 0}
    errors_seen: list = []  # (cell_index, cell, reply content) of every error, allowed ones too

    def on_cell_start(cell, cell_index):
        if cell.cell_type == "code" and cell.source.strip():
            seen["n"] += 1
            term.live = None
            term.write(f"--- [{index}/{total}] {path} cell {seen['n']}/{code_cells}: {_label(cell.source)}\n")

    def on_cell_error(cell, cell_index, execute_reply):
        errors_seen.append((cell_index, cell, execute_reply["content"]))

    def on_cell_executed(cell, cell_index, execute_reply):
        fs = saved.cell_footers(cell)
        o.gpu_cells += len(fs)
        o.fell_back += [f["fallback_from"] for f in fs if f.get("fallback_from")]
        cost = sum(float(f.get("cost_usd") or 0.0) for f in fs)
        o.cost += cost
        spent[0] += cost
        if args.max_cost is not None and spent[0] > args.max_cost:  # also after a failed cell: stop here
            content = (execute_reply or {}).get("content", {})
            also = f" (which failed: {content.get('ename')}: {content.get('evalue')})" if content.get("status") == "error" else ""
            o.cell, o.source = cell_index, cell.source
            raise RunOverBudget(f"the run has cost ${spent[0]:.6f}, over --max-cost ${args.max_cost:.6f}, "
                                 f"after cell {seen['n']}/{code_cells}{also}: the notebook stops here")

    try:
        env = {**env, **notebook_defaults(nb)}
    except ValueError as e:
        o.status, o.reason = "failed", f"{path}: {e}"
        return o
    kernel = args.kernel or nb.metadata.get("kernelspec", {}).get("name") or "python3"
    client = _client_class()(
        nb, timeout=args.timeout, kernel_name=kernel, startup_timeout=120,
        resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}},
        on_cell_start=on_cell_start, on_cell_error=on_cell_error, on_cell_executed=on_cell_executed,
    )
    client.terminal = term
    expect = (nb.metadata.get(META) or {}).get("expect_failure")
    term.write(f"==> [{index}/{total}] {path}: {code_cells} code cell(s)" + (" (expected to fail)" if expect else "") + "\n")
    try:
        client.execute(env=env)
        o.status = "passed"
    except RunOverBudget as e:
        o.status, o.reason = "budget", str(e)
    except CellTimeoutError as e:
        o.status, o.ename = "failed", "CellTimeoutError"
        o.reason = f"a cell ran longer than --timeout {args.timeout} s"
        o.traceback = str(e)
    except DeadKernelError as e:
        o.status, o.ename, o.reason = "infra", "DeadKernelError", f"the kernel died: {e}"
    except CellExecutionError as e:
        o.status, o.ename = "failed", e.ename
        o.reason = f"{e.ename}: {e.evalue}"
    except KeyboardInterrupt:
        o.status, o.reason = "infra", "interrupted"
        raise
    except Exception as e:  # the kernel did not start, a broken notebook, ...
        o.status, o.ename, o.reason = "infra", type(e).__name__, f"{type(e).__name__}: {e}"
    finally:
        o.seconds = time.monotonic() - t0
        o.out_path = _out_path(path, args.output, taken)
        os.makedirs(args.output, exist_ok=True)
        saved.drop_emptied_live(nb)  # the cells' own outputs and their footers, as the lab saves them
        recorded.record_calls(nb)  # each spawned call's id in its cell's metadata, as the lab keeps it
        nbformat.write(nb, o.out_path)  # written on failure too: it shows where it stopped
    if errors_seen:  # the error that says most: an infrastructure one anywhere, else the last one
        cell_index, cell, content = next((e for e in errors_seen if e[2].get("ename") in INFRA_ENAMES | BUDGET_ENAMES),
                                         errors_seen[-1])
        o.cell, o.source = cell_index, cell.source
        o.ename = content.get("ename", o.ename)
        o.traceback = ANSI_RE.sub("", "\n".join(content.get("traceback", []))) or o.traceback
        if o.status in ("failed", "passed") and o.ename in INFRA_ENAMES:
            o.status = "infra"  # also when the cell allowed errors: the run cannot be trusted
        if o.status == "failed" and (o.ename in BUDGET_ENAMES or _stopped_on_cost(cell)):
            o.status = "budget"
        if o.status != "passed":
            o.reason = f"{o.ename}: {content.get('evalue', '')}"
    if o.status == "infra" and o.ename == "NoSuchDevice" and not args.gpu_fallback:
        o.reason += " (run with --gpu-fallback cpu to run such cells on the cpu device)"
    if args.max_cost is not None and spent[0] > args.max_cost and o.status in ("passed", "failed", "xfailed"):
        also = f" (and {o.reason})" if o.reason else ""
        o.status, o.reason = "budget", f"the run has cost ${spent[0]:.6f}, over --max-cost ${args.max_cost:.6f}{also}"
    if expect and o.status == "failed":
        o.status = "xfailed"
    elif expect and o.status == "passed":
        o.status, o.reason = "xpassed", f"expected to fail ({expect}), but every cell passed"
    return o


# -- the whole run -------------------------------------------------------------------------------
def main(args) -> int:
    for stream in (sys.stdout, sys.stderr):  # a CI log with an ASCII locale must not crash the run
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    try:
        return _main(args)
    except Exception:  # a bug of ours must not exit 1, which means "a cell failed"
        import traceback

        traceback.print_exc()
        print(f"jupyter-gpu run: exit {EXIT_INFRA}: jupyter-gpu itself failed (above)", file=sys.stderr)
        return EXIT_INFRA


def _main(args) -> int:
    params = {}
    for name, value in args.parameter:
        if not name.isidentifier():
            print(f"jupyter-gpu run: -p {name}: not a Python name", file=sys.stderr)
            return EXIT_USAGE
        params[name] = parse_value(value)
    formats = [f for spec in args.report for f in spec.split(",") if f]
    bad = [f for f in formats if f not in ("md", "json", "html")]
    if bad:
        print(f"jupyter-gpu run: --report {bad[0]}: use md, json or html", file=sys.stderr)
        return EXIT_USAGE
    missing = [p for p in args.notebooks if not os.path.isfile(p)]
    if missing:
        print(f"jupyter-gpu run: no such notebook: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    if args.embedded and (args.url or args.token is not None):
        print("jupyter-gpu run: --embedded cannot go with --url/--token", file=sys.stderr)
        return EXIT_USAGE
    env = dict(os.environ)
    url = None if args.embedded else (args.url or settings.URL.get(env))
    if not url and args.token is not None:  # meant a shared backend: never run on the embedded one instead
        print("jupyter-gpu run: --token without --url or JUPYTER_GPU_URL", file=sys.stderr)
        return EXIT_USAGE
    if not url and not args.embedded and settings.TOKEN.get(env):
        print("jupyter-gpu run: note: JUPYTER_GPU_TOKEN is set but JUPYTER_GPU_URL is not: "
              "using the embedded backend", file=sys.stderr, flush=True)
    if args.embedded:
        for k in ("JUPYTER_GPU_URL", "JUPYTER_GPU_TOKEN"):
            env.pop(k, None)
    outcomes = [Outcome(p) for p in args.notebooks]
    if args.gpu_fallback:
        env[FALLBACK_ENV] = args.gpu_fallback
    if url:
        token = args.token if args.token is not None else settings.TOKEN.get(env)
        url = url.rstrip("/")
        env["JUPYTER_GPU_URL"], env["JUPYTER_GPU_TOKEN"] = url, token
        try:
            status = check_backend(url, token)
            print(f"jupyter-gpu run: backend {url} ({status.get('runtime')}; offers {', '.join(status.get('offers', []))})", flush=True)
        except errors.GpuError as e:
            print(f"jupyter-gpu run: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            for o in outcomes:
                o.status, o.ename, o.reason = "infra", type(e).__name__, f"not run: {e}"
            return finish(outcomes, args, formats)
    else:
        print("jupyter-gpu run: embedded backend (no JUPYTER_GPU_URL)", flush=True)
    spent, taken = [0.0], set()
    for i, path in enumerate(args.notebooks):
        if args.max_cost is not None and spent[0] > args.max_cost:
            outcomes[i].reason = f"not run: the run's budget (${args.max_cost:.6f}) was spent"
            continue
        nb_env = env if args.max_cost is None else {**env, RUN_BUDGET_ENV: repr(args.max_cost - spent[0])}
        o = outcomes[i] = run_notebook(path, i + 1, len(args.notebooks), args, nb_env, params, spent, taken)
        mark = {"passed": "ok", "xfailed": "ok (failed as expected)"}.get(o.status, "FAILED: " + o.status)
        print(f"[{i + 1}/{len(args.notebooks)}] {path}: {mark} in {o.seconds:.1f} s; {o.gpu_cells} %%gpu cell(s), "
              f"${o.cost:.6f} -> {o.out_path}", flush=True)
        if o.reason:
            print(f"    {o.reason}", file=sys.stderr if o.code else sys.stdout, flush=True)
    return finish(outcomes, args, formats)


def exit_code(outcomes: list[Outcome]) -> int:
    codes = {o.code for o in outcomes}
    return next((c for c in SEVERITY if c in codes), EXIT_OK)


def finish(outcomes: list[Outcome], args, formats: list[str]) -> int:
    from jupyter_gpu.ci import artifacts

    return artifacts.write_all(outcomes, args, formats, exit_code(outcomes))
