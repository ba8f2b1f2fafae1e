"""`jupyter-gpu prices | report | advise`: the cost commands (cli.py only hands them their arguments)."""
from __future__ import annotations

import sys

COMMANDS = ("prices", "report", "advise")


def add_parsers(sub) -> None:
    p = sub.add_parser("prices", help="the effective price catalog and where each number came from")
    p.add_argument("--gpu", default=None, help="only this GPU type")
    p.add_argument("--json", action="store_true", help="as JSON")
    r = sub.add_parser("report", help="cost report from the footers saved in executed notebooks (no backend)")
    r.add_argument("paths", nargs="+", help="notebooks, or folders searched for *.ipynb")
    r.add_argument("--format", choices=["md", "json", "html"], default="md")
    r.add_argument("--output", default=None, help="write here instead of stdout")


def main(args) -> int:
    return {"prices": _prices, "report": _report}[args.command](args)


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
    from . import report

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

    from . import pricing

    entries = [e for e in pricing.catalog() if args.gpu in (None, e.gpu)]
    if args.json:
        print(json.dumps([e.as_dict() for e in entries], indent=2))
    else:
        print(pricing.table(entries))
    return 0
