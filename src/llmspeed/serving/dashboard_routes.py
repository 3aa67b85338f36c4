"""`/dashboard`: the live page (open, like any static asset), its data (`/dashboard/data`, behind the API key) and
a viewer for `llmspeed bench` reports found under `--reports DIR` (`/dashboard/reports`, behind the key).

The sampler runs as one asyncio task inside the app's lifespan (wrapped here, so app.py only mounts), reading the
app's own Prometheus registry once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from llmspeed.serving.dashboard import DashboardConfig, DashboardSampler, read_registry
from llmspeed.serving.errors import error_response

log = logging.getLogger(__name__)
STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css", "uPlot.iife.min.js": "text/javascript",
          "uPlot.min.css": "text/css", "uPlot.LICENSE": "text/plain"}
REPORT_FILES = ("report.html", "report.json")
MAX_REPORTS = 200  # entries listed; deeper or more are ignored
MAX_DEPTH = 3  # directory levels below --reports searched for report files
# The page loads only its own files; the report viewer shows report.html (inline CSS, base64 PNGs) in a sandboxed
# blob: frame. Inline styles are allowed for that frame (a blob: document inherits this policy); scripts are not.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "frame-src blob:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def _static_dir() -> Path:
    return Path(str(resources.files("llmspeed.serving") / "static"))


def find_reports(root: Path) -> list[dict[str, Any]]:
    """Directories under `root` (itself included, at most MAX_DEPTH levels down) holding report.html or report.json,
    newest first, with the few header facts of report.json when it parses."""
    found: list[dict[str, Any]] = []
    frontier = [root]
    for _ in range(MAX_DEPTH + 1):
        nxt: list[Path] = []
        for d in frontier:
            try:
                kids = sorted(d.iterdir())
            except OSError:
                continue
            names = {k.name for k in kids if k.is_file()}
            if names & set(REPORT_FILES):
                found.append(_describe(root, d, names))
            nxt += [k for k in kids if k.is_dir() and not k.is_symlink() and not k.name.startswith(".")]
        frontier = nxt
    found.sort(key=lambda r: r["mtime"], reverse=True)
    return found[:MAX_REPORTS]


def _describe(root: Path, d: Path, names: set[str]) -> dict[str, Any]:
    rel = d.relative_to(root).as_posix()
    files = [n for n in REPORT_FILES if n in names]
    entry: dict[str, Any] = {"dir": "" if rel == "." else rel, "files": files,
                             "mtime": max((d / n).stat().st_mtime for n in files)}
    if "report.json" in names:
        try:
            rep = json.loads((d / "report.json").read_text())
            entry |= {"schema": rep.get("schema"), "created": rep.get("created"),
                      "models": rep.get("config", {}).get("models"), "scenarios": rep.get("scenarios")}
        except (OSError, ValueError, AttributeError):
            entry["schema"] = None
    return entry


def resolve_report(root: Path, rel: str) -> Path | None:
    """`rel` (e.g. 'run1/report.html') as a file inside `root`, or None: only report.html / report.json, no escape
    by '..' or a symlink."""
    try:
        p = (root / rel).resolve()
        if p.name not in REPORT_FILES or not p.is_relative_to(root.resolve()) or not p.is_file():
            return None
    except (OSError, ValueError):  # a NUL byte, a name too long, a loop: not a report
        return None
    return p


def install_sampler(app: FastAPI, sampler: DashboardSampler) -> None:
    """Run the sampler for the app's lifetime: the app's own lifespan is wrapped, not replaced."""
    inner = app.router.lifespan_context

    async def tick() -> None:
        while True:
            try:
                sampler.sample()
            except Exception:  # the dashboard must never take the server down
                log.exception("dashboard sample failed")
            await asyncio.sleep(sampler.cfg.interval_s)

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[Any]:
        async with inner(a) as state:
            task = asyncio.create_task(tick(), name="llmspeed-dashboard-sampler")
            try:
                yield state
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app.router.lifespan_context = lifespan


def mount_dashboard(app: FastAPI, metrics: Any, *, model_name: str, auth: bool, reports_dir: str | None = None,
                    config: DashboardConfig | None = None) -> DashboardSampler:
    """Add the dashboard routes to `app` and start sampling `metrics.registry` with the app. `auth`: whether the
    API needs a key (the page then asks for one before fetching anything)."""
    sampler = DashboardSampler(lambda: read_registry(metrics.registry), config)
    install_sampler(app, sampler)
    static = _static_dir()
    reports = Path(reports_dir).expanduser().resolve() if reports_dir else None
    page: list[str] = []  # read on first request: no file I/O at app construction

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard_page() -> Response:
        if not page:
            html = (static / "dashboard.html").read_text()
            html = html.replace("{{AUTH}}", "1" if auth else "0").replace("{{REPORTS}}", "1" if reports else "0")
            page.append(html.replace("{{MODEL}}", _html_escape(model_name)))
        return HTMLResponse(page[0], headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"})

    @app.get("/dashboard/static/{name}", include_in_schema=False)
    async def dashboard_static(name: str) -> Response:
        if name not in STATIC:
            return error_response(404, f"no static file {name!r}", None, "not_found")
        return FileResponse(static / name, media_type=STATIC[name], headers={"Cache-Control": "max-age=3600"})

    @app.get("/dashboard/data", summary="Dashboard time series: rates, latency quantiles, batch, KV, cache hits")
    async def dashboard_data(since: float | None = Query(None, description="only points newer than this Unix time")
                             ) -> dict[str, Any]:
        if not sampler.points:
            sampler.sample()
        return sampler.data(since) | {"model": model_name}

    @app.get("/dashboard/reports", summary="llmspeed bench reports under --reports DIR, newest first")
    async def dashboard_reports() -> Response:
        if reports is None:
            return JSONResponse({"enabled": False, "reports": []})
        return JSONResponse({"enabled": True, "reports": await asyncio.to_thread(find_reports, reports)})

    @app.get("/dashboard/reports/file", summary="One report.html or report.json under --reports DIR")
    async def dashboard_report_file(path: str = Query(..., description="e.g. run1/report.html")) -> Response:
        p = resolve_report(reports, path) if reports is not None else None
        if p is None:
            return error_response(404, f"no report file {path!r} under the reports directory", "path", "not_found")
        media = "text/html" if p.suffix == ".html" else "application/json"
        return FileResponse(p, media_type=media, headers={"Cache-Control": "no-store"})

    return sampler


def _html_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
