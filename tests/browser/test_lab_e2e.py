"""The lab extension in a real browser: Debian's Chromium driven by Playwright, a real `jupyter lab`
with the extension installed, a real kernel and the real embedded backend (``cpu`` device here).

One notebook, in order: pick the device in the sidebar, run a `%%gpu` cell that prints for ~3.6 s
and see its lines arrive before it ends, see the live status then the footer, see the sidebar's
worker and the session cost (status bar too), interrupt a running cell, release the worker.
Screenshots go to tests/browser/screenshots/ (not committed).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import _reap_backend, make_kernel_env
from tests.lab.server import jupyter

CHROMIUM = os.environ.get("JUPYTER_GPU_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]
SHOTS = Path(__file__).parent / "screenshots"
T = 60_000  # ms, the longest any one condition may take

# a team price file that gives the cpu device a price, so the cost figures are not all zero
TEAM_PRICES = """
[defaults]
serverless = "team"
dedicated = "team"

[[serverless]]
gpu = "cpu"
provider = "team"
per_s = 0.001
as_of = "2026-11-29"
source = "browser test"

[[dedicated]]
gpu = "cpu"
provider = "team"
per_h = 7.2
as_of = "2026-11-29"
source = "browser test"
"""

SLOW = "%%gpu\nimport time\nfor i in range(6):\n    print(f'line {i}', flush=True)\n    time.sleep(0.6)\n"
LONG = "%%gpu\nimport time\nfor i in range(3000):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.1)\n"

pytestmark = pytest.mark.skipif(
    not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM),
    reason=f"no Chromium at {CHROMIUM} (make test installs Debian's chromium)",
)


def notebook(cells: list[str]) -> dict:
    return {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
                     "jupyter_gpu": {"expect_failure": "kept"}},  # jupyter-gpu run's key: the sidebar keeps it
        "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "source": s, "outputs": [],
                   "execution_count": None} for i, s in enumerate(cells)],
    }


@pytest.fixture
def lab(tmp_path):
    runtime = tmp_path / "gpu-runtime"
    runtime.mkdir()
    prices = tmp_path / "prices.toml"
    prices.write_text(TEAM_PRICES)
    env = {**make_kernel_env(runtime), "JUPYTER_GPU_PRICES": str(prices)}
    try:
        with jupyter(tmp_path, env, app="lab", base_url="/user/alice/") as server:  # as under JupyterHub
            yield server
    finally:
        _reap_backend(runtime)


@pytest.fixture
def page(lab):
    yield from _chromium()


@pytest.fixture
def image_lab(tmp_path):
    """Jupyter Lab whose kernels use a backend of their own with a worker image named ``train``."""
    from tests.integration.backend_process import start_backend, stop_backend

    runtime, served = tmp_path / "gpu-runtime", tmp_path / "backend"
    runtime.mkdir()
    served.mkdir()
    cfg = served / "serve.toml"
    cfg.write_text('[images.train]\nenv = { JG_IMAGE_MARK = "trained" }\n')
    token = "image-lab-token"
    proc, url = start_backend(served, "--token", token, "--config", str(cfg))
    env = {**make_kernel_env(runtime), "JUPYTER_GPU_URL": url, "JUPYTER_GPU_TOKEN": token}
    try:
        with jupyter(tmp_path, env, app="lab") as server:
            yield server
    finally:
        stop_backend(proc)


@pytest.fixture
def image_page(image_lab):
    yield from _chromium()


def _chromium():
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        pg = context.new_page()
        pg.set_default_timeout(T)
        console = []
        pg.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        try:
            yield pg
        finally:
            try:
                pg.screenshot(path=str(SHOTS / "last.png"))
                (SHOTS / "console.log").write_text("\n".join(console))
            finally:
                browser.close()


def dollars(text: str) -> list[float]:
    """The dollar figures in a footer's or the sidebar's text, in order."""
    import re

    return [float(x) for x in re.findall(r"\$(\d+\.\d+)", text)]


def agree(sidebar, footer_usd: float, per_s: float) -> None:
    """The sidebar's session cost = the footer's + the keep-warm idle it shows x the price, within
    a rounding unit of the footer ($0.000001), and its text shows the same figure."""
    c = sidebar.locator(".jp-gpu-cost")
    usd, idle = float(c.get_attribute("data-usd")), float(c.get_attribute("data-idle-s"))
    assert usd > 0 and abs(usd - (footer_usd + idle * per_s)) <= 1.5e-6, (usd, footer_usd, idle, per_s)
    shown = dollars(c.inner_text())
    assert shown[0] > 0 and abs(shown[0] - usd) <= 1e-5 and shown[1] > 0, c.inner_text()  # serverless vs dedicated


def shot(page, name):
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def wait_idle(page):
    """The status bar names the notebook's kernel and says Idle (the toolbar's indicator says idle
    before a kernel exists, and a Shift+Enter then is lost)."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('#jp-main-statusbar *')]"
        ".some(e => e.children.length === 0 && /\\(ipykernel\\) \\| Idle/.test(e.textContent))", timeout=T)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=T)


def run_cell(page, index: int):
    """Select cell `index` and press Shift+Enter once the kernel is idle (else the key is lost)."""
    wait_idle(page)
    cell = page.locator(".jp-NotebookPanel:visible .jp-Cell").nth(index)
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    return cell


def test_sidebar_footer_streaming_and_interrupt(lab, page):
    # the settings schema is served to the Settings editor
    status, settings = lab.get("lab/api/settings/jupyter-gpu:plugin")
    assert status == 200, settings
    assert {"backendUrl", "backendToken", "defaultGpu", "keepWarm"} <= set(settings["schema"]["properties"])
    (lab.root / "demo.ipynb").write_text(json.dumps(notebook(["%load_ext jupyter_gpu", SLOW, LONG])))
    page.goto(f"{lab.url}lab/tree/demo.ipynb?token={lab.token}")
    wait_idle(page)

    # the sidebar: every catalog type with both prices; the cpu device picked for this notebook
    page.click(".jp-SideBar.jp-mod-right [data-id='jupyter-gpu-sidebar']")
    sidebar = page.locator("#jupyter-gpu-sidebar")
    h100 = sidebar.locator("tr.jp-gpu-type[data-gpu='H100']")
    h100.wait_for()
    assert h100.locator(".jp-gpu-price-serverless").inner_text().startswith("$")
    assert h100.locator(".jp-gpu-price-dedicated").inner_text().startswith("$")
    cpu = sidebar.locator("tr.jp-gpu-type[data-gpu='cpu']")
    assert cpu.locator(".jp-gpu-price-serverless").inner_text() == "$3.60/h"  # the team's price file
    cpu.locator("input[type=radio]").check()
    page.wait_for_function(
        "() => document.querySelector('#jupyter-gpu-sidebar .jp-gpu-message').textContent.startsWith('applied: cpu')")
    shot(page, "1-device-picked")

    # a cell that prints for ~3.6 s: its lines show up while it still runs
    run_cell(page, 0)
    cell = run_cell(page, 1)
    out = cell.locator(".jp-OutputArea")
    out.get_by_text("line 1").wait_for()
    t_first = time.monotonic()
    assert "line 5" not in out.inner_text(), "the output came all at once, not streamed"
    cell.locator(".jp-gpu-footer-live").wait_for()  # the live status line, updated in place
    assert "running" in cell.locator(".jp-gpu-footer-live .jp-gpu-footer-phase").inner_text()
    shot(page, "2-streaming")
    footer = cell.locator(".jp-gpu-footer:not(.jp-gpu-footer-live)")
    footer.wait_for()
    t_done = time.monotonic()
    assert t_done - t_first > 1.5, f"the lines arrived only {t_done - t_first:.2f} s before the cell ended"
    assert cell.locator(".jp-gpu-footer-live").count() == 0  # the live line is gone, the footer stays
    text = footer.inner_text()
    assert "worker-s" in text and "GPU-s" not in text and "dedicated" in text and "wall" in text  # cpu, not a GPU
    cost = footer.locator(".jp-gpu-footer-cost").inner_text()
    assert cost.startswith("$0.00") and not cost.startswith("$0 "), cost  # priced by the team file
    serverless, dedicated = dollars(cost)
    assert serverless > 0 and dedicated > 0, cost
    assert footer.locator(".jp-gpu-footer-device").inner_text()
    shot(page, "3-footer")

    # the sidebar: this notebook's warm worker with its keep-warm countdown, and the session cost
    worker = sidebar.locator("tr.jp-gpu-worker[data-gpu='cpu'][data-state='idle']")
    worker.wait_for()
    page.wait_for_function(
        "() => { const c = document.querySelector('#jupyter-gpu-sidebar .jp-gpu-cost');"
        " return c && Number(c.dataset.cells) >= 1 && Number(c.dataset.usd) > 0; }")
    assert ":" in worker.locator(".jp-gpu-worker-countdown").inner_text()  # m:ss left of 5 min
    # the sidebar agrees with the footer: its cost is the footer's plus the keep-warm idle so far
    agree(sidebar, serverless, per_s=0.001)
    status_item = page.locator(".jp-gpu-status")
    # named by what the session ran on: a cpu session's cost is not called a GPU's
    assert status_item.inner_text().startswith("cpu $0.00"), status_item.inner_text()
    shot(page, "4-sidebar-worker-cost")

    # interrupt a running cell: the remote code stops, the worker stays warm
    cell = run_cell(page, 2)
    cell.locator(".jp-OutputArea").get_by_text("tick 3").wait_for()
    page.wait_for_function(  # a warm lane cell is announced by its worker: busy, counted as running
        "() => { const w = document.querySelector('#jupyter-gpu-sidebar tr.jp-gpu-worker');"
        " const c = document.querySelector('#jupyter-gpu-sidebar .jp-gpu-cost');"
        " return w && w.dataset.state === 'busy' && c.textContent.includes('1 running'); }")
    shot(page, "5-running")
    page.click(".jp-NotebookPanel:visible [data-jp-item-name='interrupt'] button")
    cell.locator(".jp-OutputArea").get_by_text("KeyboardInterrupt").first.wait_for()
    wait_idle(page)
    assert "tick 2999" not in cell.locator(".jp-OutputArea").inner_text()
    page.wait_for_function(  # the interrupted cell is metered; the worker is still there, warm
        "() => { const c = document.querySelector('#jupyter-gpu-sidebar .jp-gpu-cost');"
        " const w = document.querySelector('#jupyter-gpu-sidebar tr.jp-gpu-worker');"
        " return Number(c.dataset.cells) >= 2 && w && w.dataset.state === 'idle'; }")
    shot(page, "6-interrupted")

    # release: the worker goes; the choice was saved into the notebook's metadata
    sidebar.locator("button.jp-gpu-release").click()
    page.wait_for_function(
        "() => !document.querySelector('#jupyter-gpu-sidebar tr.jp-gpu-worker')")
    page.click(".jp-NotebookPanel:visible [data-jp-item-name='save'] button")  # focus is in the sidebar
    deadline = time.monotonic() + 30
    while "gpu" not in json.loads((lab.root / "demo.ipynb").read_text())["metadata"]["jupyter_gpu"]:
        assert time.monotonic() < deadline, "the notebook was not saved with its device choice"
        time.sleep(0.1)  # polling the file the server writes, with a deadline
    saved_nb = json.loads((lab.root / "demo.ipynb").read_text())
    assert saved_nb["metadata"]["jupyter_gpu"] == {"expect_failure": "kept", "gpu": "cpu"}
    # the live status lines the page still holds (emptied, invisible) are not saved
    assert all(o.get("data") for c in saved_nb["cells"] for o in c.get("outputs", [])
               if o["output_type"] == "display_data"), [c.get("outputs") for c in saved_nb["cells"]]
    assert any(o["output_type"] == "stream" for o in saved_nb["cells"][1]["outputs"])
    shot(page, "7-released")

    # pre-warm: a worker for this notebook's type starts before any cell needs it
    sidebar.locator("button.jp-gpu-prewarm").click()
    sidebar.locator("tr.jp-gpu-worker[data-gpu='cpu'][data-state='idle']").wait_for()
    assert sidebar.locator(".jp-gpu-message").inner_text() == "pre-warmed"
    shot(page, "8-prewarmed")


def test_the_sidebar_picks_the_worker_image_a_cell_runs_in(image_lab, image_page):
    page = image_page
    (image_lab.root / "img.ipynb").write_text(json.dumps(notebook(
        ["%load_ext jupyter_gpu", "%%gpu\nimport os\nprint('mark:', os.environ.get('JG_IMAGE_MARK'))"])))
    page.goto(f"{image_lab.url}lab/tree/img.ipynb?token={image_lab.token}")
    wait_idle(page)
    page.click(".jp-SideBar.jp-mod-right [data-id='jupyter-gpu-sidebar']")
    sidebar = page.locator("#jupyter-gpu-sidebar")
    select = sidebar.locator("select.jp-gpu-image-select")
    page.wait_for_function(  # the backend's images, once the sidebar has polled it
        "() => [...document.querySelectorAll('#jupyter-gpu-sidebar select.jp-gpu-image-select option')]"
        ".map(o => o.value).join() === 'default,train'")
    assert select.input_value() == "default"
    select.select_option("train")
    page.wait_for_function(
        "() => document.querySelector('#jupyter-gpu-sidebar .jp-gpu-message').textContent.includes('image train')")
    run_cell(page, 0)
    cell = run_cell(page, 1)
    cell.locator(".jp-OutputArea").get_by_text("mark: trained").wait_for()  # the image's environment
    footer = cell.locator(".jp-gpu-footer:not(.jp-gpu-footer-live)")
    footer.wait_for()
    assert "image train" in footer.inner_text()
    sidebar.locator("tr.jp-gpu-worker").get_by_text("· train").wait_for()  # its worker, by image
    shot(page, "9-image-picked")

    select.select_option("default")  # back to the default image: the kernel is told, not only the notebook
    page.wait_for_function(
        "() => document.querySelector('#jupyter-gpu-sidebar .jp-gpu-message').textContent.startsWith('applied:')"
        " && !document.querySelector('#jupyter-gpu-sidebar .jp-gpu-message').textContent.includes('image')")
    cell = run_cell(page, 1)
    cell.locator(".jp-OutputArea").get_by_text("mark: None").wait_for()


@pytest.fixture
def shipped_lab(tmp_path):
    """Jupyter Lab with the shipped price catalog only (no team file): the cpu device's list price."""
    runtime = tmp_path / "gpu-runtime"
    runtime.mkdir()
    env = {k: v for k, v in make_kernel_env(runtime).items() if k != "JUPYTER_GPU_PRICES"}
    try:
        with jupyter(tmp_path, env, app="lab") as server:
            yield server
    finally:
        _reap_backend(runtime)


@pytest.fixture
def shipped_page(shipped_lab):
    yield from _chromium()


def test_the_shipped_cpu_price_shows_in_the_footer_and_the_sidebar(shipped_lab, shipped_page):
    import re

    page = shipped_page
    (shipped_lab.root / "cpu.ipynb").write_text(json.dumps(notebook(
        ["%load_ext jupyter_gpu", "%%gpu --gpu cpu --keep-warm 5m\nimport time\ntime.sleep(1)\nprint('done')"])))
    page.goto(f"{shipped_lab.url}lab/tree/cpu.ipynb?token={shipped_lab.token}")
    wait_idle(page)
    page.click(".jp-SideBar.jp-mod-right [data-id='jupyter-gpu-sidebar']")
    sidebar = page.locator("#jupyter-gpu-sidebar")
    cpu = sidebar.locator("tr.jp-gpu-type[data-gpu='cpu']")
    cpu.wait_for()
    assert dollars(cpu.locator(".jp-gpu-price-serverless").inner_text())[0] > 0  # Modal's CPU list price x cores
    assert dollars(cpu.locator(".jp-gpu-price-dedicated").inner_text())[0] > 0
    run_cell(page, 0)
    cell = run_cell(page, 1)
    footer = cell.locator(".jp-gpu-footer:not(.jp-gpu-footer-live)")
    footer.wait_for()
    text = footer.inner_text()
    m = re.search(r"cpu \((\d+) cores?\) at Modal CPU list price 2026-10-04", text)
    assert m and "GPU-s" not in text, text
    serverless, dedicated = dollars(footer.locator(".jp-gpu-footer-cost").inner_text())
    assert serverless > 0 and dedicated > 0, text  # a 1 s cell on the cpu device: priced, not $0
    sidebar.locator("tr.jp-gpu-worker[data-gpu='cpu'][data-state='idle']").wait_for()
    page.wait_for_function(
        "() => { const c = document.querySelector('#jupyter-gpu-sidebar .jp-gpu-cost');"
        " return c && Number(c.dataset.cells) >= 1 && Number(c.dataset.usd) > 0; }")
    agree(sidebar, serverless, per_s=0.0000131 * int(m.group(1)))
    shot(page, "10-shipped-cpu-price")
