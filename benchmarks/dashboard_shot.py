"""Screenshot of a running server's /dashboard in headless Chromium (Debian's `chromium`, driven by Playwright).

    python benchmarks/dashboard_shot.py http://127.0.0.1:8000 --key KEY --wait 20 --out docs/dashboard.png
"""

from __future__ import annotations

import argparse
import sys

CHROMIUM = "/usr/bin/chromium"


def shoot(url: str, key: str | None, wait_s: float, out: str, width: int = 1400, height: int = 1100) -> list[str]:
    """Open the dashboard, enter the key, let it poll for `wait_s`, save a screenshot; return console errors."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{url}/dashboard")
            if key:
                page.fill("#key", key)
                page.click("#keysave")
            page.wait_for_function("() => Number(document.body.dataset.points || 0) >= 2", timeout=30_000)
            page.wait_for_timeout(int(wait_s * 1000))
            page.screenshot(path=out)
        finally:
            browser.close()
    return errors


def main() -> int:
    ap = argparse.ArgumentParser(description="screenshot of /dashboard")
    ap.add_argument("url")
    ap.add_argument("--key", default=None)
    ap.add_argument("--wait", type=float, default=10.0, help="seconds of polling before the screenshot")
    ap.add_argument("--out", default="dashboard.png")
    a = ap.parse_args()
    errors = shoot(a.url.rstrip("/"), a.key, a.wait, a.out)
    for e in errors:
        print(f"console error: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
