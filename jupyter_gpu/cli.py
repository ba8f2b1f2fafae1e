"""`jupyter-gpu`: serve the backend; run notebooks headless and print what they cost."""
from __future__ import annotations

import argparse
import os
import sys


def _run(args) -> int:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from . import summary

    failed = 0
    for path in args.notebooks:
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(
            nb, timeout=args.timeout, kernel_name=args.kernel,
            resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}},
        )
        error = None
        try:
            client.execute()
        except CellExecutionError as e:
            error = e
        os.makedirs(args.output, exist_ok=True)
        out_path = os.path.join(args.output, os.path.basename(path))
        nbformat.write(nb, out_path)  # written on failure too: it shows where it stopped
        s = summary.summarize(summary.footers(nb))
        status = "FAILED" if error else "ok"
        print(f"{path}: {status} -> {out_path}")
        print(f"  cost: {summary.text(s)}")
        if error:
            failed += 1
            print(f"  {str(error).strip().splitlines()[-1]}", file=sys.stderr)
    return 1 if failed else 0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="jupyter-gpu")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the backend (see `jupyter-gpu serve --help`)", add_help=False)
    run = sub.add_parser("run", help="execute notebooks headless and print their cost")
    run.add_argument("notebooks", nargs="+")
    run.add_argument("--output", default="notebooks/out", help="where executed notebooks go")
    run.add_argument("--timeout", type=int, default=600, help="per-cell timeout in seconds")
    run.add_argument("--kernel", default="python3", help="kernel name")
    from . import costcli  # prices, report, advise

    costcli.add_parsers(sub)
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "serve":
        from jupyter_gpu_backend.server import main as serve

        serve(argv[1:])
        return
    args = ap.parse_args(argv)
    if args.command in costcli.COMMANDS:
        sys.exit(costcli.main(args))
    sys.exit(_run(args))
