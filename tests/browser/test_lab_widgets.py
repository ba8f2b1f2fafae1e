"""Widgets of `%%gpu` cells in a real JupyterLab in Chromium: what a person sees and does.

A slider made on the worker is dragged and its remote observer's output appears; an `interact`
updates its output; a `tqdm.auto` loop shows a widget bar that reaches 100 %; an Output widget
shows text captured on the worker; `%gpu cost` shows dollar figures as text, not as math.
Screenshots go to tests/browser/screenshots/ (not committed).
"""
from __future__ import annotations

import json

from tests.browser.test_lab_e2e import T, lab, notebook, page, pytestmark, run_cell, shot, wait_idle  # noqa: F401

SLIDER = ("%%gpu\nimport ipywidgets as W\ns = W.IntSlider(value=3, min=0, max=100, description='remote')\n"
          "seen = W.Output()\ndef moved(change):\n    with seen:\n        print('moved to', change['new'])\n"
          "s.observe(moved, names='value')\ndisplay(s, seen)")
INTERACT = "%%gpu\nfrom ipywidgets import interact\n@interact(x=(0, 50))\ndef double(x=5):\n    print('double:', x * 2)"
TQDM = "%%gpu\nimport time\nfrom tqdm.auto import tqdm\nfor i in tqdm(range(40)):\n    time.sleep(0.02)"
OUTPUT = "%%gpu\nimport ipywidgets as W\ncap = W.Output()\ndisplay(cap)\nwith cap:\n    print('captured remotely')"
COST = "%gpu cost"


def _drag(page, handle, dx: int) -> None:
    box = handle.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y, steps=8)
    page.mouse.up()


def test_remote_widgets_live_in_the_page(lab, page):
    (lab.root / "widgets.ipynb").write_text(json.dumps(notebook(
        ["%load_ext jupyter_gpu", SLIDER, INTERACT, TQDM, OUTPUT, COST])))
    page.goto(f"{lab.url}lab/tree/widgets.ipynb?token={lab.token}")
    wait_idle(page)
    run_cell(page, 0)

    # a slider made on the worker: dragged here, its observer (on the worker) prints into the Output
    cell = run_cell(page, 1)
    handle = cell.locator(".widget-slider .noUi-handle")
    handle.wait_for()
    assert "Error displaying widget" not in cell.inner_text()
    wait_idle(page)
    _drag(page, handle, 120)
    # every move the page sent reached the worker, in order: the last line names where it stopped
    page.wait_for_function(
        "(cell) => { const lines = cell.querySelector('.widget-output').innerText.trim().split('\\n'); "
        "return lines[lines.length - 1] === 'moved to ' + cell.querySelector('.widget-readout').innerText.trim(); }",
        arg=cell.element_handle(), timeout=T)
    assert int(cell.locator(".widget-readout").inner_text()) > 3
    shot(page, "w1-slider-dragged")

    # interact: its output shows at once, and follows the control
    cell = run_cell(page, 2)
    out = cell.locator(".widget-output")
    out.get_by_text("double: 10").wait_for()
    wait_idle(page)
    _drag(page, cell.locator(".widget-slider .noUi-handle"), 60)
    # the output follows the control to where the drag left it (each move clears and prints again)
    page.wait_for_function(
        "(cell) => { const v = Number(cell.querySelector('.widget-readout').innerText); "
        "return v !== 5 && cell.querySelector('.widget-output').innerText.trim() === 'double: ' + 2 * v; }",
        arg=cell.element_handle(), timeout=T)
    shot(page, "w2-interact")

    # tqdm.auto: the widget bar, not red text, and it reaches 100 %
    cell = run_cell(page, 3)
    cell.locator(".widget-hprogress").wait_for()
    page.wait_for_function(
        "(cell) => cell.innerText.includes('40/40') && cell.innerText.includes('100%')",
        arg=cell.element_handle(), timeout=T)
    assert cell.locator(".jp-Cell-outputArea > .jp-OutputArea-child > "
                        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
    shot(page, "w3-tqdm")

    # an Output widget shows what was printed inside it on the worker, and the cell's stream does not
    cell = run_cell(page, 4)
    cell.locator(".widget-output").get_by_text("captured remotely").wait_for()
    own = ".jp-Cell-outputArea > .jp-OutputArea-child > .jp-OutputArea-output"  # not the widget's own area
    assert cell.locator(f"{own}[data-mime-type='application/vnd.jupyter.stdout']").count() == 0
    shot(page, "w4-output-widget")

    # %gpu cost: dollars as text (no math typesetting of "$...$")
    cell = run_cell(page, 5)
    cell.locator(".jp-RenderedMarkdown, .jp-RenderedHTMLCommon").first.wait_for()
    wait_idle(page)
    text = cell.locator(".jp-OutputArea").inner_text()
    assert "$0.0" in text, text
    assert cell.locator(".jp-OutputArea mjx-container, .jp-OutputArea .MathJax").count() == 0
    shot(page, "w5-cost")
