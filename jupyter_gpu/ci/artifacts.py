"""What `jupyter-gpu run` leaves behind for CI: JUnit XML, the step summary, the cost reports.

The cost figures come from `jupyter_gpu.cost.report` (built from the footers saved in the executed
notebooks); the pass/fail table and the exit code's meaning are the run's own.
"""
from __future__ import annotations

import datetime
import os
import re
import socket
import sys
import xml.etree.ElementTree as ET

from jupyter_gpu.cost import report  # issue 5's reports: build / to_markdown / to_json / to_html

CODES = {0: "every notebook passed, within budget", 1: "a cell failed", 3: "the budget was broken",
         4: "infrastructure failure (backend, token, worker, kernel, or the run's reports)"}
COST_FAILED = "The cost report could not be built"
_BAD_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _ran(outcomes) -> list:
    return [(o.out_path or o.path, o.nb) for o in outcomes if o.nb is not None and o.status != "not run"]


def run_markdown(outcomes, args, code: int) -> str:
    passed = sum(o.status in ("passed", "xfailed") for o in outcomes)
    lines = [f"## jupyter-gpu run: {passed}/{len(outcomes)} notebook(s) passed - exit {code} ({CODES.get(code, '?')})", "",
             "| notebook | result | %%gpu cells | cost | time |", "|---|---|---|---|---|"]
    for o in outcomes:
        result = {"xfailed": "failed as expected"}.get(o.status, o.status)
        lines.append(f"| `{o.path}` | {result} | {o.gpu_cells} | \\${o.cost:.6f} | {o.seconds:.1f} s |")
    lines.append("")
    for o in outcomes:
        if o.reason and o.status != "passed":
            where = f" (cell {o.cell + 1})" if o.cell is not None else ""
            lines.append(f"- `{o.path}`{where}: {report.dollars(o.reason)}")
    total = sum(o.cost for o in outcomes)
    if args.max_cost is not None:
        lines.append(f"- budget: \\${total:.6f} spent of --max-cost \\${args.max_cost:.6f}")  # \$: not LaTeX on GitHub
    fell = [spec for o in outcomes for spec in o.fell_back]
    if fell:
        asked = ", ".join(sorted(set(fell)))
        lines.append(f"- GPU fallback: {len(fell)} %%gpu cell(s) asked for {asked}, which is not offered, "
                     f"and ran on `{args.gpu_fallback}` instead (--gpu-fallback {args.gpu_fallback})")
    try:
        cost = report.to_markdown(report.build(_ran(outcomes)))
    except Exception as e:  # the run's own table still goes out; write_all fails the run for it
        cost = f"**{COST_FAILED}:** `{type(e).__name__}: {e}`\n"
    return "\n".join(lines).rstrip() + "\n\n" + cost


def _text(s: str) -> str:
    return _BAD_XML.sub("", s or "")


def _classname(path: str) -> str:
    """The notebook's folder, relative to here when it is below, as a dotted name ("notebooks")."""
    folder = os.path.dirname(os.path.abspath(path))
    rel = os.path.relpath(folder)
    name = (folder if rel.startswith("..") else rel).replace(os.sep, ".").strip(".")
    return name or "notebooks"


def junit_xml(outcomes, args) -> bytes:
    """One test case per notebook; a failed cell's source and traceback in its <failure>."""
    total_time = sum(o.seconds for o in outcomes)
    counts = {"failures": sum(o.status in ("failed", "xpassed", "budget") for o in outcomes),
              "errors": sum(o.status == "infra" for o in outcomes),
              "skipped": sum(o.status in ("xfailed", "not run") for o in outcomes)}
    root = ET.Element("testsuites", name="jupyter-gpu run", tests=str(len(outcomes)),
                      time=f"{total_time:.3f}", **{k: str(v) for k, v in counts.items()})
    suite = ET.SubElement(root, "testsuite", name="jupyter-gpu run", tests=str(len(outcomes)),
                          time=f"{total_time:.3f}", timestamp=datetime.datetime.now().replace(microsecond=0).isoformat(),
                          hostname=socket.gethostname(), **{k: str(v) for k, v in counts.items()})
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="cost_usd", value=f"{sum(o.cost for o in outcomes):.6f}")
    if args.max_cost is not None:
        ET.SubElement(props, "property", name="max_cost_usd", value=f"{args.max_cost:.6f}")
    if args.gpu_fallback:
        ET.SubElement(props, "property", name="gpu_fallback", value=args.gpu_fallback)
    for o in outcomes:
        case = ET.SubElement(suite, "testcase", name=os.path.basename(o.path), classname=_classname(o.path),
                             time=f"{o.seconds:.3f}", file=o.path)
        where = f"cell {o.cell + 1}" if o.cell is not None else "notebook"
        detail = f"{where}:\n{o.source}\n\n{o.traceback}".strip() if o.source or o.traceback else o.reason
        if o.status in ("failed", "xpassed", "budget"):
            kind = "BudgetExceeded" if o.status == "budget" else (o.ename or "CellExecutionError")
            ET.SubElement(case, "failure", message=_text(o.reason), type=kind).text = _text(detail)
        elif o.status == "infra":
            ET.SubElement(case, "error", message=_text(o.reason), type=o.ename or "InfrastructureError").text = _text(detail)
        elif o.status in ("xfailed", "not run"):
            msg = f"expected failure: {o.reason}" if o.status == "xfailed" else o.reason
            ET.SubElement(case, "skipped", message=_text(msg)).text = _text(detail) if o.status == "xfailed" else None
        out = f"executed notebook: {o.out_path}\n{o.gpu_cells} %%gpu cell(s), ${o.cost:.6f}\n" if o.out_path else ""
        if out:
            ET.SubElement(case, "system-out").text = out
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def write_all(outcomes, args, formats: list[str], code: int) -> int:
    """Write the JUnit file, the step summary and the reports; the run's exit code, which becomes
    the infrastructure code when one of them could not be written (never a silent green run)."""
    written_ok = True
    steps = [("JUnit", lambda: _write_junit(outcomes, args))] if args.junit else []
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        steps.append(("step summary", lambda: _append_summary(outcomes, args, code)))
    if formats:
        steps.append(("report", lambda: _write_reports(outcomes, args, formats)))
    if _ran(outcomes):  # the cost summary, in the log too, read there as text: its dollars as they are
        steps.append(("cost summary", lambda: print(
            "\n" + report.to_markdown(report.build(_ran(outcomes))).replace("\\$", "$"), flush=True)))
    for what, step in steps:
        try:
            step()
        except Exception as e:
            written_ok = False
            print(f"jupyter-gpu run: could not write the {what}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    if not written_ok and code == 0:
        code = 4
    print(f"jupyter-gpu run: exit {code}: {CODES.get(code, '?')}", file=sys.stderr if code else sys.stdout, flush=True)
    return code


def _write_junit(outcomes, args) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(args.junit)), exist_ok=True)
    with open(args.junit, "wb") as f:
        f.write(junit_xml(outcomes, args))


def _append_summary(outcomes, args, code: int) -> None:
    md = run_markdown(outcomes, args, code)
    with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as f:  # earlier steps wrote theirs
        f.write(md + "\n")
    if COST_FAILED in md:
        raise RuntimeError("its cost report could not be built (the summary says why)")


def _write_reports(outcomes, args, formats) -> None:
    r = report.build(_ran(outcomes))
    os.makedirs(args.output, exist_ok=True)
    for fmt in formats:
        path = os.path.join(args.output, f"report.{fmt}")
        with open(path, "w", encoding="utf-8") as f:
            f.write({"md": report.to_markdown, "json": report.to_json, "html": report.to_html}[fmt](r))
        print(f"jupyter-gpu run: report -> {path}", flush=True)
