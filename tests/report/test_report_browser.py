"""The report in a real browser (headless Chromium): no errors, every figure drawn, no requests.

Skips when Chromium or Playwright is missing, unless OMICSTWIN_REQUIRE_BROWSER=1 (CI), where a
missing browser is a failure. Playwright drives the system Chromium; it never downloads one.
The report is the session fixture ``full_report_path`` of ``conftest.py`` (built once).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str | None:
    for candidate in (os.environ.get("OMICSTWIN_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    problem = None
    if executable is None:
        problem = "Chromium not found (install the Debian package 'chromium')"
    elif importlib.util.find_spec("playwright") is None:
        problem = "the Python package 'playwright' is not installed (pip install playwright)"
    if problem:
        if os.environ.get("OMICSTWIN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"OMICSTWIN_REQUIRE_BROWSER=1 but {problem}")
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def test_report_renders_in_chromium(browser, full_report_path, tmp_path):
    report = full_report_path
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def route(request_route):
        url = request_route.request.url
        if url.startswith(("file:", "data:")):
            request_route.continue_()
        else:  # anything else would be a request to the outside world
            requests.append(url)
            request_route.abort()

    page.route("**/*", route)
    page.goto(report.as_uri(), wait_until="load")
    images = page.evaluate(
        """() => Array.from(document.images).map(img => ({
            alt: img.alt, complete: img.complete, width: img.naturalWidth,
            shown: img.getBoundingClientRect().width}))"""
    )
    svgs = page.evaluate(
        """() => Array.from(document.querySelectorAll('svg')).map(svg => {
            const box = svg.getBoundingClientRect(); return [box.width, box.height]; })"""
    )
    anchors = page.evaluate(
        """() => Array.from(document.querySelectorAll('nav a')).map(
            a => document.querySelector(a.getAttribute('href')) !== null)"""
    )
    screenshot = tmp_path / "report.png"
    page.screenshot(path=str(screenshot), full_page=True)
    page.close()

    assert errors == []
    assert requests == []
    assert len(images) == 12  # with the MNM figure
    for image in images:
        assert image["complete"] and image["width"] > 0 and image["shown"] > 0, image["alt"]
    for width, height in svgs:
        assert width > 0 and height > 0
    assert anchors and all(anchors)  # every table-of-contents entry points at a section
    assert screenshot.stat().st_size > 10_000
