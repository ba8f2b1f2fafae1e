"""The "Python 3 (jupyter-gpu)" kernel as a person picks it: from JupyterLab's launcher, in Chromium.
The Jupyter server's kernel manager runs its provisioner, so the embedded backend is up before the
first cell; that cell's footer says warm, and the saved notebook names the kernel (so `jupyter-gpu
run` starts the same one).  Screenshots go to tests/browser/screenshots/ (not committed)."""
from __future__ import annotations

import json
import time

import psutil

from tests.browser.test_lab_e2e import T, lab, page, pytestmark, shot  # noqa: F401

NAME = "Python 3 (jupyter-gpu)"


def wait_for(condition, what: str, timeout: float = 60.0):
    """Polls a file the server or the backend writes, with a deadline."""
    deadline = time.monotonic() + timeout
    while not (got := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return got


def read_json(path):
    """The file's JSON, or None while it is not there or not whole yet."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def test_the_jupyter_gpu_kernel_from_the_launcher_starts_its_backend_with_it(lab, page):
    page.goto(f"{lab.url}lab?token={lab.token}")
    card = page.locator(".jp-LauncherCard[data-category='Notebook']", has_text=NAME)
    card.wait_for()
    shot(page, "kernel-1-launcher")
    card.click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#jp-main-statusbar *')]"
        ".some(e => e.children.length === 0 && /\\(jupyter-gpu\\) \\| Idle/.test(e.textContent))", timeout=T)

    # before any cell ran, the kernel's backend is up beside it, started by the provisioner
    info = wait_for(lambda: read_json(lab.root.parent / "gpu-runtime" / "backend.json"),
                    "no embedded backend came up with the kernel")
    assert "--quiet-start" in psutil.Process(info["pid"]).cmdline()

    cell = page.locator(".jp-NotebookPanel:visible .jp-Cell").first
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.type("%load_ext jupyter_gpu")
    page.keyboard.press("Shift+Enter")
    page.wait_for_selector(".jp-NotebookPanel:visible .jp-Notebook-ExecutionIndicator[data-status='idle']")
    page.keyboard.type("%%gpu")
    page.keyboard.press("Enter")
    page.keyboard.type("print(6 * 7)")
    page.keyboard.press("Shift+Enter")
    cell = page.locator(".jp-NotebookPanel:visible .jp-Cell").nth(1)
    footer = cell.locator(".jp-gpu-footer:not(.jp-gpu-footer-live)")
    footer.wait_for()
    assert cell.locator(".jp-OutputArea").get_by_text("42", exact=True).count() == 1
    assert "warm" in footer.inner_text(), footer.inner_text()  # its worker was up before the cell
    shot(page, "kernel-2-first-cell-warm")

    page.click(".jp-NotebookPanel:visible [data-jp-item-name='save'] button")
    dialog = page.locator(".jp-Dialog")  # JupyterLab asks for a name on an untitled notebook's first save
    dialog.locator("input.jp-mod-styled[type='text'], input[type='text']").first.fill("gpu-kernel.ipynb")
    dialog.get_by_role("button", name="Rename and Save").click()
    saved = wait_for(lambda: read_json(lab.root / "gpu-kernel.ipynb"), "the notebook was not saved")
    assert saved["metadata"]["kernelspec"]["name"] == "jupyter-gpu"
    assert saved["metadata"]["kernelspec"]["display_name"] == NAME
    assert any("42" in "".join(o.get("text", "")) for o in saved["cells"][1]["outputs"])
