"""`jupyter-gpu`: serve the backend; run notebooks headless and print what they cost."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="jupyter-gpu")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the backend (see `jupyter-gpu serve --help`)", add_help=False)
    from jupyter_gpu.ci import runner  # `run`: notebooks in CI (budgets, reports, exit codes)

    runner.add_arguments(sub.add_parser("run", help="execute notebooks headless (CI): exit codes, budget, reports"))
    from jupyter_gpu.cli import cost_commands  # prices, report, advise

    cost_commands.add_parsers(sub)
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "serve":
        from jupyter_gpu_backend.server import main as serve

        serve(argv[1:])
        return
    args = ap.parse_args(argv)
    if args.command in cost_commands.COMMANDS:
        sys.exit(cost_commands.main(args))
    sys.exit(runner.main(args))
