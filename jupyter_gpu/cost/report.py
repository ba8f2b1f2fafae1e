"""The shareable cost report of one or more executed notebooks, built from their saved footers.

Stable API (``jupyter-gpu run --report`` and the GitHub step summary call exactly these):
``build(notebooks) -> dict``, ``to_markdown(r)``, ``to_json(r)``, ``to_html(r)``.  ``%gpu cost``
builds the same report from the footers the kernel kept (``from_records``), so a report of the saved
notebook equals what the kernel showed.  All arithmetic is in `billing.py`.
"""
from __future__ import annotations

import html
import json
import time

from jupyter_gpu.cost import billing, saved
from jupyter_gpu.cost.footer import NO_MATH

MIME = "application/vnd.jupyter-gpu.report+json"


def build(notebooks: list) -> dict:
    """``notebooks``: ``[(path or name, nbformat.NotebookNode), ...]`` -> the report as plain data."""
    return from_records([(str(name), saved.footers(nb)) for name, nb in notebooks])


def from_records(groups: list) -> dict:
    """``groups``: ``[(name, [footer, ...]), ...]``; each group is one kernel session."""
    per_nb, everything = [], []
    for name, footers in groups:
        recs = [{**f, "session": f.get("session", name)} for f in footers]
        everything.extend(recs)
        per_nb.append({"notebook": name, "summary": billing.session(recs)})
    total = billing.session(everything)
    return {
        "version": 1,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "notebooks": per_nb,
        "total": total,
        "prices": _prices(everything),
    }


def _prices(recs: list) -> list:
    seen = {}
    for r in recs:
        p = r.get("price") or {}
        seen.setdefault(r.get("gpu"), {"gpu": r.get("gpu"), **{k: p.get(k) for k in (
            "serverless_per_s", "provider", "as_of", "source", "dedicated_per_h", "dedicated_provider",
            "dedicated_as_of", "dedicated_source", "note", "unsourced", "origin", "cores", "per_core_s", "per_core_h",
            "basis")}})
    return list(seen.values())


def to_json(r: dict) -> str:
    return json.dumps(r, indent=2, sort_keys=True)


# -- text ------------------------------------------------------------------------------------------
def usd(x: float | None) -> str:
    if x is None:
        return "-"
    return f"${x:.6f}" if abs(x) < 0.01 else f"${x:,.4f}" if abs(x) < 100 else f"${x:,.2f}"


def secs(x: float) -> str:
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s" if x < 120 else f"{x / 60:.1f} min"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}" if x >= 0.01 or x == 0 else f"{x:.2%}"


def seconds_unit(s: dict) -> str:
    """"GPU-s", or "worker-s" where every cell ran on the cpu device (never called GPU time)."""
    return "worker-s" if s.get("gpus") and set(s["gpus"]) <= {"cpu"} else "GPU-s"


def headline(s: dict) -> str:
    return (f"{s['cells']} %%gpu cell(s) on {', '.join(s['devices']) or 'no device'}: {s['failed']} failed, "
            f"{s['cold_starts']} cold start(s); {s['billed_seconds']:.3f} {seconds_unit(s)} billed = {usd(s['serverless_usd'])} "
            f"serverless vs {usd(s['dedicated_usd'])} dedicated for the same {secs(s['wall_s'])} wall time; "
            f"utilisation {pct(s['utilisation'])}")


def lines(s: dict) -> list[str]:
    """The session summary as plain sentences (Markdown-safe), shared by text, Markdown and HTML."""
    out = [headline(s)]
    ph, bp = s["phases_s"], s["billed_s"]
    out.append(("worker time" if seconds_unit(s) == "worker-s" else "GPU time") + " by phase: " + ", ".join(
        f"{k.replace('_', ' ')} {secs(ph.get(k, 0.0))} (billed {secs(bp.get(k, 0.0))})"
        for k in ("queue", "cold_start", "run", "keep_warm_idle")) + f", rounding {secs(bp['rounding'])}")
    if s["pending_keep_warm_s"]:
        out.append(f"not counted: up to {secs(s['pending_keep_warm_s'])} of keep-warm after the last cell, "
                   "billed unless the workers are released")
    be = s.get("break_even")
    if be:
        out.append(f"break-even ({be['gpu']}): utilisation {pct(be['utilisation'])} at list prices, "
                   f"{pct(be['utilisation_observed'])} with this session's cold starts, idle and rounding"
                   + (f", {be['requests_per_month']:,.0f} cells/month at {usd(be['serverless_usd_per_request'])} each"
                      if be["requests_per_month"] else ""))
        m = s["monthly"]
        out.append(f"monthly at the observed rate ({m['assumes']}): {usd(m['serverless_usd'])} serverless "
                   f"({m['requests']:,.0f} cells) vs {usd(m['dedicated_usd'])} dedicated")
    rec = s["recommendation"]
    out.append(f"recommendation: **{rec['choice']}** - {rec['reason']}")
    out += [f"note: {n}" for n in rec.get("notes", [])]
    if s.get("right_size"):
        out.append(f"right-sizing: {s['right_size']['text']}")
    return out


def _price_lines(r: dict) -> list[str]:
    out = []
    for p in r["prices"]:
        if not p.get("serverless_per_s") and not p.get("dedicated_per_h"):
            out.append(f"{p['gpu']}: {p.get('note') or 'no price'}")
            continue
        if p.get("per_core_s") or p.get("per_core_h"):  # the cpu device: what a core costs, times the worker's cores
            out.append(f"{p['gpu']}: priced per core x {p.get('cores')} cores ({p.get('basis')}): serverless "
                       f"${p.get('per_core_s') or 0:.7f}/core-s, dedicated ${p.get('per_core_h') or 0:.4f}/core-h")
        # a per-core price is shown per worker here: say for how many cores (the provider's name may
        # say "per vCPU", which is what the line above prices)
        per_worker = f" for {p.get('cores')} cores" if p.get("per_core_s") or p.get("per_core_h") else ""
        line = (f"{p['gpu']}: serverless ${p['serverless_per_s']:.6f}/s{per_worker} ({p['provider']}, "
                f"{p['as_of'] or 'undated'}, {p['source']}); dedicated ${p['dedicated_per_h']:.3f}/h{per_worker} "
                f"({p['dedicated_provider']}, "
                f"{p['dedicated_as_of'] or 'undated'}, {p['dedicated_source']})")
        if p.get("origin") and p["origin"] != "shipped":
            line += f"; from {p['origin']}"
        if p.get("unsourced"):
            line += f"; unsourced: {p['unsourced']}"
        out.append(line)
    return out


def dollars(text: str) -> str:
    """Markdown text with its dollar signs escaped (CommonMark's `\\$`): a viewer with math (GitHub,
    pandoc, VS Code) reads two `$` on a line as LaTeX ("$0.01 serverless vs $0.02 dedicated" in
    italics).  Not for code spans, where a backslash shows as it is."""
    return text.replace("$", "\\$")


def to_markdown(r: dict) -> str:
    md = ["## jupyter-gpu cost report", ""]
    if len(r["notebooks"]) > 1:
        md += ["| notebook | cells | GPU-s billed | serverless | dedicated | utilisation |", "|---|---|---|---|---|---|"]
        for nb in r["notebooks"]:
            s = nb["summary"]
            md.append(f"| `{nb['notebook']}` | {s['cells']} | {s['billed_seconds']:.3f} | {dollars(usd(s['serverless_usd']))} "
                      f"| {dollars(usd(s['dedicated_usd']))} | {pct(s['utilisation'])} |")
        md.append("")
    elif r["notebooks"]:
        md += [f"`{r['notebooks'][0]['notebook']}`", ""]
    md += [f"- {dollars(line)}" for line in lines(r["total"])]
    md += ["", "Prices:", ""] + [f"- {dollars(line)}" for line in _price_lines(r)] + [""]
    return "\n".join(md)


def text(r: dict) -> str:
    return "\n".join(lines(r["total"])).replace("**", "")


# -- HTML ------------------------------------------------------------------------------------------
COLORS = {"queue": "#9e9e9e", "cold_start": "#ef6c00", "run": "#1e88e5", "idle": "#a5d6a7", "cost": "#6a1b9a"}


def chart_svg(s: dict, width: int = 720) -> str:
    """Inline SVG: cumulative serverless cost over time (top) and each cell's phases (bottom)."""
    tl = s["timeline"]
    span = max([s["wall_s"], *(p["t"] + p["wall"] for p in tl)] or [0.0]) or 1.0
    left, right, top, mid, bottom = 70, width - 10, 20, 130, 200
    x = lambda t: left + (right - left) * t / span  # noqa: E731
    top_cost = max([p["cumulative_usd"] for p in tl] or [0.0]) or 1.0
    y = lambda c: mid - (mid - top) * c / top_cost  # noqa: E731
    parts = [f'<svg class="jupyter-gpu-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="250" '
             f'viewBox="0 0 {width} 250" role="img" aria-label="cost over time and phases">',
             f'<text x="{left}" y="12" font-size="11">cumulative serverless cost</text>',
             f'<line x1="{left}" y1="{mid}" x2="{right}" y2="{mid}" stroke="#999"/>',
             f'<text x="{left - 4}" y="{top + 4}" font-size="10" text-anchor="end">{html.escape(usd(top_cost))}</text>',
             f'<text x="{left - 4}" y="{mid}" font-size="10" text-anchor="end">$0</text>']
    pts, prev = [f"{x(0):.1f},{y(0):.1f}"], 0.0
    for p in tl:
        end = p["t"] + p["wall"]
        pts += [f"{x(p['t']):.1f},{y(prev):.1f}", f"{x(end):.1f},{y(p['cumulative_usd']):.1f}"]
        prev = p["cumulative_usd"]
    pts.append(f"{x(span):.1f},{y(prev):.1f}")
    parts.append(f'<polyline class="cost-line" fill="none" stroke="{COLORS["cost"]}" stroke-width="2" '
                 f'points="{" ".join(pts)}"/>')
    parts.append(f'<text x="{left}" y="{mid + 22}" font-size="11">phases per cell</text>')
    band = bottom - mid - 30
    for i, p in enumerate(tl):
        t = p["t"]
        for phase in ("queue", "cold_start", "run"):
            d = p[phase]
            if d <= 0:
                continue
            w = max(1.0, x(t + d) - x(t))
            parts.append(f'<rect class="phase-{phase}" x="{x(t):.1f}" y="{mid + 28}" width="{w:.1f}" height="{band}" '
                         f'fill="{COLORS[phase]}"><title>cell {i + 1}: {phase.replace("_", " ")} '
                         f'{html.escape(secs(d))}</title></rect>')
            t += d
    parts.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#999"/>')
    parts.append(f'<text x="{left}" y="{bottom + 14}" font-size="10">0</text>')
    parts.append(f'<text x="{right}" y="{bottom + 14}" font-size="10" text-anchor="end">{html.escape(secs(span))}</text>')
    lx = left
    for name, label in (("queue", "queue"), ("cold_start", "cold start"), ("run", "run"), ("cost", "cost")):
        parts.append(f'<rect x="{lx}" y="232" width="10" height="10" fill="{COLORS[name]}"/>'
                     f'<text x="{lx + 14}" y="241" font-size="11">{label}</text>')
        lx += 90
    parts.append("</svg>")
    return "".join(parts)


def fragment(r: dict) -> str:
    """The report as an HTML fragment (what `%gpu cost` displays in the notebook)."""
    s = r["total"]
    items = "".join(f"<li>{html.escape(line).replace('**', '')}</li>" for line in lines(s))
    rows = ""
    if len(r["notebooks"]) > 1:
        rows = "<table><tr><th>notebook</th><th>cells</th><th>GPU-s</th><th>serverless</th><th>dedicated</th></tr>" + "".join(
            f"<tr><td>{html.escape(nb['notebook'])}</td><td>{nb['summary']['cells']}</td>"
            f"<td>{nb['summary']['billed_seconds']:.3f}</td><td>{usd(nb['summary']['serverless_usd'])}</td>"
            f"<td>{usd(nb['summary']['dedicated_usd'])}</td></tr>" for nb in r["notebooks"]) + "</table>"
    prices = "".join(f"<li>{html.escape(line)}</li>" for line in _price_lines(r))
    return (f'<div class="jupyter-gpu-report {NO_MATH}" style="font:13px sans-serif">{chart_svg(s)}{rows}<ul>{items}</ul>'
            f'{_cells_table(r)}<details><summary>prices used</summary><ul>{prices}</ul></details></div>')


MAX_ROWS = 500


def _cells_table(r: dict) -> str:
    """Every cell (up to MAX_ROWS): where it started, its phases and its cost."""
    rows = [(nb["notebook"], p) for nb in r["notebooks"] for p in nb["summary"]["timeline"]]
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{p['t']:.2f} s</td><td>{html.escape(str(p['gpu']))}</td>"
        f"<td>{html.escape(str(p['status']))}</td><td>{secs(p['queue'])}</td><td>{secs(p['cold_start'])}</td>"
        f"<td>{secs(p['run'])}</td><td>{usd(p['cost_usd'])}</td></tr>" for name, p in rows[:MAX_ROWS])
    more = f"<p>{len(rows) - MAX_ROWS} more cells not listed</p>" if len(rows) > MAX_ROWS else ""
    return (f"<details><summary>{len(rows)} cells</summary><table class='cells'><tr><th>notebook</th><th>start</th>"
            "<th>gpu</th><th>status</th><th>queue</th><th>cold start</th><th>run</th><th>cost</th></tr>"
            f"{body}</table>{more}</details>")


def to_html(r: dict) -> str:
    names = ", ".join(nb["notebook"] for nb in r["notebooks"]) or "no notebooks"
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>jupyter-gpu cost report</title>"
            "<style>body{font:14px sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>"
            f"<h2>jupyter-gpu cost report</h2><p>{html.escape(names)} · generated {html.escape(r['generated_at'])}</p>"
            f"{fragment(r)}</body></html>")


def bundle(r: dict) -> dict:
    """What `%gpu cost` displays: the chart and text as HTML, the text, and the report as JSON."""
    return {"text/html": fragment(r), "text/plain": text(r), MIME: json.loads(to_json(r))}
