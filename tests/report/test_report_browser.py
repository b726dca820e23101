"""report.html in real headless Chromium: it renders the chart and the tables, logs no console error,
and fetches nothing from the network."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from report_browser import chromium, inspect_page
from report_support import load, shared_report

pytestmark = pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (apt-get install chromium)")

CHECKS = {
    "svg": "!!document.querySelector('svg#chart')",
    "points": "document.querySelectorAll('svg#chart g.point').length",
    "hollow": "[...document.querySelectorAll('svg#chart g.point')].filter(g => "
    "g.querySelector('circle, rect, polygon').getAttribute('fill') === '#ffffff').length",
    "front": "document.querySelector('#pareto-front') ? document.querySelector('#pareto-front')"
    ".getAttribute('points').split(' ').length : 0",
    "chart_width": "document.querySelector('svg#chart').getBoundingClientRect().width",
    "result_rows": "document.querySelectorAll('#results tbody tr').length",
    "per_class_rows": "document.querySelectorAll('#per-class tbody tr').length",
    "recommendations": "document.querySelectorAll('#recommendations li').length",
    "sources": "document.querySelectorAll('#figure-sources li').length",
    "tags": "[...new Set([...document.querySelectorAll('#results .tag')].map(t => t.textContent))].sort().join('')",
}


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, tiny_onnx, small_val):
    return shared_report(tmp_path_factory, tiny_onnx, small_val)


@pytest.mark.slow
def test_the_report_renders_in_chromium_with_its_chart_and_tables_and_no_console_error(report_dir, tmp_path):
    doc = load(report_dir)
    page = inspect_page((report_dir / "report.html").as_uri(), CHECKS)
    assert page.console_errors == [], page.console_errors
    assert all(url.startswith(("file:", "data:")) for url in page.requests), page.requests
    v = page.values
    ok = [r for r in doc["results"] if r["status"] == "ok"]
    assert v["svg"] is True and v["chart_width"] > 500
    assert v["points"] == len(ok)
    assert v["hollow"] == sum(r["latency"]["source"]["kind"] == "estimated" for r in ok) == 4
    assert v["front"] >= sum(r["pareto"] for r in ok)
    assert v["result_rows"] == len(doc["results"])
    assert v["per_class_rows"] == len(doc["fp32_reference"]["per_class"]) == 10
    assert v["recommendations"] == 5 and v["sources"] == len(ok)
    assert v["tags"] == "EMS"  # estimated, measured, simulated figures are all labelled
    image = cv2.imdecode(np.frombuffer(page.screenshot, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[1] == 1280 and image.shape[0] > 1500
    (tmp_path / "report.png").write_bytes(page.screenshot)
    # the chart itself: a screenshot of the SVG alone has coloured points on it
    chart = inspect_page((report_dir / "report.html").as_uri(), {}, selector="#chart").screenshot
    pixels = cv2.imdecode(np.frombuffer(chart, np.uint8), cv2.IMREAD_COLOR)
    coloured = (pixels.max(axis=2).astype(int) - pixels.min(axis=2)) > 80
    assert pixels.shape[1] >= 800 and coloured.sum() > 200


def test_the_browser_check_catches_console_errors_and_network_requests(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><head><link rel='icon' href='data:,'></head><body><p>x</p>"
        "<img src='http://127.0.0.1:9/missing.png'><script>console.error('boom'); missingFunction();</script>"
        "</body></html>"
    )
    page = inspect_page(bad.as_uri(), {})
    joined = "\n".join(page.console_errors)
    assert "console: boom" in joined and "missingFunction is not defined" in joined
    assert "http://127.0.0.1:9/missing.png" in page.requests
