"""The HTML report in real Chromium (Debian's, driven by Playwright): it renders, the chart is
there with its cost line and phase bars, nothing is fetched from anywhere, no console errors."""
from __future__ import annotations

import os

import pytest

from jupyter_gpu.cost import report

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed (apt-get install chromium)"),
    pytest.mark.skipif(sync_playwright is None, reason="the python playwright package is not installed"),
]

PRICE = {"serverless_per_s": 0.001097, "dedicated_per_h": 6.88, "provider": "Modal", "as_of": "2026-10-04",
         "source": "https://modal.com/pricing", "dedicated_provider": "AWS us-east-1 on-demand, per GPU",
         "dedicated_as_of": "2026-01-21", "dedicated_source": "https://instances.vantage.sh", "note": "",
         "granularity_s": 1.0, "minimum_s": 0.0, "dedicated_granularity_s": 1.0, "dedicated_minimum_s": 0.0,
         "profile": {"bills_cold_start": True, "bills_keep_warm": True, "unit": "worker"}}


def footer(start, cold, run, worker):
    return {"gpu": "H100", "device": "H100", "worker": worker, "status": "ok", "cold": cold > 0, "started_at": start,
            "keep_warm": 60.0, "price": PRICE,
            "timings": {"queue": 0.0, "cold_start": cold, "run": run, "wall": cold + run + 0.01}}


def test_html_report_renders_in_chromium(tmp_path):
    r = report.from_records([("a <b>.ipynb", [footer(0.0, 2.0, 5.0, "w1"), footer(20.0, 0.0, 3.0, "w1")]),
                             ("b.ipynb", [footer(100.0, 1.5, 10.0, "w2")])])
    page_file = tmp_path / "report.html"
    page_file.write_text(report.to_html(r), encoding="utf-8")
    problems, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", lambda req: requests.append(req.url))
            page.goto(page_file.as_uri(), wait_until="load")
            assert page.title() == "jupyter-gpu cost report"
            chart = page.locator("svg.jupyter-gpu-chart")
            assert chart.count() == 1
            box = chart.bounding_box()
            assert box and box["width"] > 600 and box["height"] > 200
            line = page.locator("svg.jupyter-gpu-chart polyline.cost-line")
            assert line.count() == 1 and line.bounding_box()["width"] > 500  # spans the whole time axis
            assert page.locator("rect.phase-run").count() == 3
            assert page.locator("rect.phase-cold_start").count() == 2
            text = page.locator("body").inner_text()
            assert "a <b>.ipynb" in text  # escaped, shown as text
            assert "recommendation:" in text and "Modal" in page.content()
            # every cell is listed (collapsed until opened)
            page.locator("details", has_text="3 cells").locator("summary").click()
            assert page.locator("table.cells tr").count() == 4 and page.locator("table.cells").is_visible()
        finally:
            browser.close()
    assert problems == []
    assert requests == [page_file.as_uri()]  # self-contained: nothing else fetched
