"""`@jupyter_gpu.function` in a real JupyterLab in Chromium: what a person sees of a map.

A cell's ``f.map(range(2000))`` (8 batches of 256, its worker cold) shows a progress bar and a
label of its counts (queued, starting, running, done, failed, the cost so far) while it runs; at
the end the bar is full, the label says all 2000 done, and the cell's one footer sums its 8 calls.
Screenshots go to tests/browser/screenshots/ (not committed).
"""
from __future__ import annotations

import json
import re

from tests.browser.test_lab_e2e import T, lab, notebook, page, pytestmark, run_cell, shot, wait_idle  # noqa: F401

MAP = ("import jupyter_gpu\n\n@jupyter_gpu.function(gpu='cpu')\ndef slow_square(x):\n    import time\n"
       "    time.sleep(0.002)\n    return x * x\n\nout = list(slow_square.map(range(2000)))\nprint(len(out), sum(out))")
COUNTS = re.compile(r"map slow_square: (\d+) queued · (\d+) starting · (\d+) running · (\d+) done · (\d+) failed · "
                    r"\$[\d.]+ so far")


def test_a_maps_progress_bar_counts_to_the_end_and_its_calls_share_one_footer(lab, page):
    (lab.root / "map.ipynb").write_text(json.dumps(notebook(["%load_ext jupyter_gpu", MAP])))
    page.goto(f"{lab.url}lab/tree/map.ipynb?token={lab.token}")
    wait_idle(page)
    run_cell(page, 0)
    cell = run_cell(page, 1)

    # the widget, while the map runs: a bar and the counts per state
    bar = cell.locator(".widget-hprogress")
    bar.wait_for()
    label = cell.locator(".widget-html")
    first = COUNTS.search(label.inner_text())
    assert first is not None, label.inner_text()
    assert int(first.group(4)) < 2000, first.group(0)  # seen before the end
    assert "Error displaying widget" not in cell.inner_text()
    shot(page, "f1-map-running")

    # the end: all done, none failed, the bar full; the cell's footer sums its 8 calls
    page.wait_for_function("(cell) => cell.innerText.includes('2000 done')", arg=cell.element_handle(), timeout=T)
    end = COUNTS.search(label.inner_text())
    assert end.groups() == ("0", "0", "0", "2000", "0"), end.group(0)
    assert bar.locator(".progress-bar").evaluate("e => e.style.width") == "100%"
    footer = cell.locator(".jp-gpu-footer:not(.jp-gpu-footer-live)")
    footer.wait_for()
    assert "8 function calls" in footer.inner_text(), footer.inner_text()
    cell.locator(".jp-OutputArea").get_by_text("2000 2664667000").wait_for()  # the results, in the cell
    wait_idle(page)
    shot(page, "f2-map-done")
