"""What a person sees of a `%%gpu` cell's shell in a real JupyterLab (Chromium), as a local cell
shows it: help paged below the cell, a clear_output(wait=True) that keeps the cell's text, a
figure under the traceback of the error that followed it.  Screenshots go to
tests/browser/screenshots/ (not committed)."""
from __future__ import annotations

import json

from tests.browser.test_lab_e2e import lab, notebook, page, pytestmark, run_cell, shot, wait_idle  # noqa: F401

HELP = "%%gpu\nlen?"
CLEAR_LAST = "%%gpu\nfrom IPython.display import clear_output\nprint('kept text', end='')\nclear_output(wait=True)"
PLOT_THEN_RAISE = "%%gpu\nimport matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nraise ValueError('after the plot')"


def test_help_clear_output_and_a_figure_before_an_error_show_as_in_a_local_cell(lab, page):
    (lab.root / "shell.ipynb").write_text(json.dumps(notebook(["%load_ext jupyter_gpu", HELP, CLEAR_LAST,
                                                               PLOT_THEN_RAISE])))
    page.goto(f"{lab.url}lab/tree/shell.ipynb?token={lab.token}")
    wait_idle(page)
    run_cell(page, 0)

    # `len?`: the pager's text, shown by JupyterLab from the reply's payload
    cell = run_cell(page, 1)
    out = cell.locator(".jp-OutputArea")
    out.get_by_text("Return the number of items in a container.").wait_for()
    shown = out.locator(".jp-OutputArea-output").evaluate_all("els => els.map(e => [e.dataset.mimeType, e.textContent])")
    assert [mime for mime, text in shown if "Return the number" in text] == ["text/plain"], shown  # paged, not stdout
    cell.locator(".jp-gpu-footer:not(.jp-gpu-footer-live)").wait_for()
    shot(page, "shell-1-help")

    # the footer is not the output a clear_output(wait=True) waits for: the text stays
    cell = run_cell(page, 2)
    cell.locator(".jp-gpu-footer:not(.jp-gpu-footer-live)").wait_for()
    wait_idle(page)
    assert "kept text" in cell.locator(".jp-OutputArea").inner_text()

    # the figure is shown after the traceback, as the inline backend shows it at post_execute
    cell = run_cell(page, 3)
    cell.locator(".jp-gpu-footer:not(.jp-gpu-footer-live)").wait_for()
    wait_idle(page)
    shown = cell.locator(".jp-OutputArea-output").evaluate_all(
        "els => els.map(e => e.querySelector('img') ? 'image' : e.textContent)")
    error_at = next(i for i, text in enumerate(shown) if "ValueError: after the plot" in text)
    assert shown.index("image") > error_at, shown
    shot(page, "shell-2-figure-after-error")
