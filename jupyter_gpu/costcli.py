"""`jupyter-gpu prices | report | advise`: the cost commands (cli.py only hands them their arguments)."""
from __future__ import annotations

import sys

COMMANDS = ("prices", "report", "advise")


def add_parsers(sub) -> None:
    p = sub.add_parser("prices", help="the effective price catalog and where each number came from")
    p.add_argument("--gpu", default=None, help="only this GPU type")
    p.add_argument("--json", action="store_true", help="as JSON")


def main(args) -> int:
    return {"prices": _prices}[args.command](args)


def _prices(args) -> int:
    import json

    from . import pricing

    entries = [e for e in pricing.catalog() if args.gpu in (None, e.gpu)]
    if args.json:
        print(json.dumps([e.as_dict() for e in entries], indent=2))
    else:
        print(pricing.table(entries))
    return 0
