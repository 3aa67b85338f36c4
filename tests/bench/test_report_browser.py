"""report.html rendered by headless Chromium (Debian's, driven by Playwright): images decode, tables exist."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def check_report_html(html: Path, screenshot: Path | None = None) -> dict:
    """Open the report offline; return image/table facts (and save a full-page screenshot if asked)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:"))
                       else route.abort())  # prove self-containment: nothing but the file itself loads
            page.goto(html.resolve().as_uri())
            page.wait_for_load_state("load")
            facts = page.evaluate("""() => ({
                images: Array.from(document.images).map(i => ({complete: i.complete, w: i.naturalWidth})),
                tables: Array.from(document.querySelectorAll('table')).map(t => t.className),
                strategyRows: document.querySelectorAll('table.strategy tbody tr').length,
                resultRows: document.querySelectorAll('table.results tbody tr').length,
            })""")
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return facts


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} missing (scripts/test.sh installs it)")
def test_report_html_in_chromium(tiny_report: Path, tmp_path: Path) -> None:
    pytest.importorskip("playwright")
    shot = Path(os.environ["LLMSPEED_SCREENSHOT"]) if os.environ.get("LLMSPEED_SCREENSHOT") else tmp_path / "s.png"
    facts = check_report_html(tiny_report / "report.html", shot)
    assert len(facts["images"]) == 2
    assert all(i["complete"] and i["w"] > 0 for i in facts["images"]), facts["images"]
    assert {"results", "strategy", "resources"} <= set(facts["tables"])
    assert facts["strategyRows"] > 0 and facts["resultRows"] >= 7
    assert shot.stat().st_size > 10_000
