"""`jupyter-gpu prices | report | advise`: the cost commands (cli/__init__.py only hands them their arguments)."""
from __future__ import annotations

import sys
from jupyter_gpu._wire import settings

COMMANDS = ("prices", "report", "advise")


def add_parsers(sub) -> None:
    p = sub.add_parser("prices", help="the effective price catalog and where each number came from")
    p.add_argument("--gpu", default=None, help="only this GPU type")
    p.add_argument("--json", action="store_true", help="as JSON")
    r = sub.add_parser("report", help="cost report from the footers saved in executed notebooks (no backend)")
    r.add_argument("paths", nargs="+", help="notebooks, or folders searched for *.ipynb")
    r.add_argument("--format", choices=["md", "json", "html"], default="md")
    r.add_argument("--output", default=None, help="write here instead of stdout")
    a = sub.add_parser("advise", help="replay measured cells against serverless / dedicated / hybrid scenarios")
    a.add_argument("paths", nargs="*", help="executed notebooks or folders (their footers are the trace)")
    a.add_argument("--cells", help="a saved `GET /api/cells` JSON file (the backend's ledger) as the trace")
    a.add_argument("--url", help="fetch /api/cells from this backend (token: --token or JUPYTER_GPU_TOKEN)")
    a.add_argument("--token", default=None)
    a.add_argument("--scenario", action="append", default=None,
                   help="serverless:K | dedicated:N | hybrid:N:K (K keep-warm seconds); repeat; default: a set")
    a.add_argument("--cold-start", type=float, default=None, help="cold start seconds (default: measured median)")
    a.add_argument("--json", action="store_true", help="as JSON")


def main(args) -> int:
    return {"prices": _prices, "report": _report, "advise": _advise}[args.command](args)


def notebook_paths(paths: list[str]) -> list[str]:
    """The notebooks named, and those under the folders named (checkpoints skipped), sorted."""
    import os

    found = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if d != ".ipynb_checkpoints")
                found += [os.path.join(root, f) for f in sorted(files) if f.endswith(".ipynb")]
        elif os.path.exists(p):
            found.append(p)
        else:
            raise FileNotFoundError(f"no such notebook or folder: {p}")
    return found


def load_notebooks(paths: list[str]) -> list:
    import nbformat

    return [(p, nbformat.read(p, as_version=4)) for p in notebook_paths(paths)]


def _write(text: str, output: str | None) -> None:
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {output}", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _report(args) -> int:
    from jupyter_gpu.cost import report

    try:
        nbs = load_notebooks(args.paths)
    except FileNotFoundError as e:
        print(f"jupyter-gpu report: {e}", file=sys.stderr)
        return 2
    r = report.build(nbs)
    _write({"md": report.to_markdown, "json": report.to_json, "html": report.to_html}[args.format](r), args.output)
    return 0


def _prices(args) -> int:
    import json

    from jupyter_gpu.cost import pricing

    entries = [e for e in pricing.catalog() if args.gpu in (None, e.gpu)]
    if args.json:
        print(json.dumps([e.as_dict() for e in entries], indent=2))
    else:
        print(pricing.table(entries))
    return 0


def _advise(args) -> int:
    import json

    from jupyter_gpu.cost import advise, pricing, saved

    try:
        scenarios = [advise.parse_scenario(x) for x in (args.scenario or advise.DEFAULT_SCENARIOS)]
        trace = []
        for _, nb in load_notebooks(args.paths):
            trace += advise.trace_from_footers(saved.footers(nb))
        if args.cells:
            with open(args.cells) as f:
                trace += advise.trace_from_ledger(json.load(f))
        if args.url:
            import urllib.request

            token = args.token or settings.TOKEN.get()
            req = urllib.request.Request(args.url.rstrip("/") + "/api/cells?limit=10000",
                                         headers={"Authorization": f"token {token}"})
            from jupyter_gpu._wire.wsclient import https_context

            with urllib.request.urlopen(req, timeout=30, context=https_context(args.url)) as resp:
                trace += advise.trace_from_ledger(json.load(resp))
    except (ValueError, OSError) as e:
        print(f"jupyter-gpu advise: {e}", file=sys.stderr)
        return 2
    if not trace:
        print("jupyter-gpu advise: no measured cells (give executed notebooks, --cells or --url)", file=sys.stderr)
        return 2
    a = advise.advise(sorted(trace, key=lambda x: x["t"]), scenarios, lambda g: pricing.price_for(g).as_dict(),
                      args.cold_start)
    print(json.dumps(a, indent=2) if args.json else advise.to_text(a))
    return 0
