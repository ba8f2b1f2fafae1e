"""The shareable cost report of one or more executed notebooks, built from their saved footers.

Stable API (``jupyter-gpu run --report`` and the GitHub step summary call exactly these):
``build(notebooks) -> dict``, ``to_markdown(r)``, ``to_json(r)``, ``to_html(r)``.
"""
from __future__ import annotations

import html
import json

from . import summary


def build(notebooks: list) -> dict:
    """``notebooks``: ``[(path or name, nbformat.NotebookNode), ...]`` -> the report as plain data."""
    per_nb = []
    records = []
    for name, nb in notebooks:
        fs = summary.footers(nb)
        records.extend(fs)
        per_nb.append({"notebook": str(name), "summary": summary.summarize(fs)})
    return {"version": 1, "notebooks": per_nb, "total": summary.summarize(records)}


def to_json(r: dict) -> str:
    return json.dumps(r, indent=2, sort_keys=True)


def to_markdown(r: dict) -> str:
    lines = ["## jupyter-gpu cost report", ""]
    for nb in r["notebooks"]:
        lines.append(f"- `{nb['notebook']}`: {summary.text(nb['summary'])}")
    lines += ["", f"**Total:** {summary.text(r['total'])}", ""]
    return "\n".join(lines)


def to_html(r: dict) -> str:
    body = "".join(f"<li>{html.escape(nb['notebook'])}: {html.escape(summary.text(nb['summary']))}</li>"
                   for nb in r["notebooks"])
    return ("<!doctype html><html><head><meta charset='utf-8'><title>jupyter-gpu cost report</title></head>"
            f"<body><h2>jupyter-gpu cost report</h2><ul>{body}</ul>"
            f"<p><b>Total:</b> {html.escape(summary.text(r['total']))}</p></body></html>")
