"""/dashboard: the sampler's arithmetic (quantiles, windows, n/a for absent counters), its routes and auth, and the
report listing; the page itself in headless Chromium is tests/serving/test_dashboard_browser.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from llmspeed.serving.dashboard import (
    DashboardConfig,
    DashboardSampler,
    derive_point,
    histogram_quantile,
    read_registry,
)
from tests.serving.conftest import API_KEY

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    cum = [(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (float("inf"), 40.0)]
    assert histogram_quantile(0.25, cum) == pytest.approx(0.1 * 10 / 10)  # rank 10: top of the first bucket
    assert histogram_quantile(0.5, cum) == pytest.approx(0.1 + 0.4 * (20 - 10) / 20)
    assert histogram_quantile(0.99, cum) == pytest.approx(0.5 + 0.5 * (39.6 - 30) / 10)
    assert histogram_quantile(0.99, [(0.1, 1.0), (float("inf"), 5.0)]) == 0.1  # rank in +Inf: largest finite bound
    assert histogram_quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None


def _snap(req: float, tok: float, ttft: list[float], draft: float | None = None, acc: float | None = None) -> dict:
    s = {"llmspeed:request_success_total{finished_reason=\"length\"}": req, "llmspeed:generation_tokens_total": tok,
         "llmspeed:num_requests_running": 2.0, "llmspeed:kv_cache_blocks_used": 5.0,
         "llmspeed:response_cache_total{result=\"hit-l1\"}": req / 2, "llmspeed:response_cache_total{result=\"miss\"}": req}
    for le, c in zip(("0.1", "1.0", "+Inf"), ttft, strict=True):
        s[f'llmspeed:time_to_first_token_seconds_bucket{{le="{le}"}}'] = c
    if draft is not None:
        s["llmspeed:spec_decode_num_draft_tokens_total"] = draft
        s["llmspeed:spec_decode_num_accepted_tokens_total"] = acc or 0.0
    return s


def test_derive_point_uses_window_deltas_and_none_for_the_unknown() -> None:
    old, new = _snap(10, 100, [5, 10, 10]), _snap(20, 300, [5, 20, 20])
    p = derive_point(105.0, new, (100.0, old), (100.0, old))
    assert p["req_s"] == pytest.approx(2.0) and p["tok_s"] == pytest.approx(40.0)
    assert p["ttft_p50"] == pytest.approx(0.1 + 0.9 * 5 / 10)  # the window's 10 new observations all in (0.1, 1]
    assert p["resp_hit"] == pytest.approx(5 / 15)  # 5 hits of 15 lookups in the window
    assert p["spec_accept"] is None and p["prefix_hit"] is None and p["tpot_p50"] is None
    first = derive_point(100.0, old, (100.0, old), (100.0, old))
    assert first["req_s"] is None and first["ttft_p99"] is None  # nothing to compare with yet: unknown, not 0
    spec = derive_point(105.0, _snap(20, 300, [5, 20, 20], 40, 30), (100.0, old), (100.0, _snap(10, 100, [5, 10, 10], 0, 0)))
    assert spec["spec_accept"] == pytest.approx(0.75)


def test_sampler_is_bounded_and_serves_points_since() -> None:
    clock = iter(range(1000, 2000))
    seq = iter(range(1, 1000))
    now = {"t": 0.0}

    def tick() -> float:
        now["t"] = float(next(clock))
        return now["t"]

    def read() -> dict:
        n = float(next(seq))
        return _snap(n, 10 * n, [n, n, n])

    s = DashboardSampler(read, DashboardConfig(interval_s=1, history_s=20, rate_window_s=5, quantile_window_s=10),
                         clock=lambda: now["t"])
    for _ in range(50):
        tick()
        s.sample()
    assert len(s.points) == 20 and len(s.raw) <= 12
    last = s.points[-1]
    assert last["req_s"] == pytest.approx(1.0) and last["tok_s"] == pytest.approx(10.0)
    assert last["window_s"] == {"rate": 5.0, "quantile": 10.0}
    assert [p["t"] for p in s.data(since=last["t"] - 2)["points"]] == [last["t"] - 1, last["t"]]
    with pytest.raises(ValueError, match="history_s"):
        DashboardConfig(interval_s=2, history_s=1)


@pytest.fixture(scope="module")
def reports_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reports")
    (root / "run1").mkdir()
    (root / "run1" / "report.json").write_text(json.dumps({"schema": "llmspeed.bench/1", "created": "2026-01-01T00:00:00Z",
                                                           "config": {"models": ["tiny"]}, "scenarios": ["decode_b1"]}))
    (root / "run1" / "report.html").write_text("<html><body><table class='results'></table></body></html>")
    (root / "notes.txt").write_text("not a report")
    (root.parent / "secret.json").write_text("{}")
    return root


@pytest.fixture(scope="module")
def dash_server(make_server, reports_dir: Path) -> object:
    return make_server(api_key=API_KEY, reports_dir=str(reports_dir))


def test_page_is_open_data_needs_the_key(dash_server) -> None:
    url = dash_server.url
    page = httpx.get(f"{url}/dashboard")
    assert page.status_code == 200 and 'data-auth="1"' in page.text and "uPlot.iife.min.js" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for asset in ("uPlot.iife.min.js", "dashboard.js", "uPlot.LICENSE"):
        assert httpx.get(f"{url}/dashboard/static/{asset}").status_code == 200
    assert httpx.get(f"{url}/dashboard/static/..%2Fapp.py").status_code == 404
    for path in ("/dashboard/data", "/dashboard/reports", "/dashboard/reports/file?path=run1/report.json"):
        r = httpx.get(f"{url}{path}")
        assert r.status_code == 401, path
        assert r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{url}/dashboard/data", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_data_moves_under_load(dash_server) -> None:
    url = dash_server.url
    before = httpx.get(f"{url}/dashboard/data", headers=AUTH).json()
    assert before["totals"]["spec_available"] is False  # this engine has no speculative decoding: the page says n/a
    body = {"model": "tiny", "prompt": "hello there", "max_tokens": 8, "temperature": 0}
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as c:
        for i in range(4):
            assert c.post("/v1/completions", json=body | {"prompt": f"hello {i}"}).status_code == 200
        assert c.post("/v1/completions", json=body | {"prompt": "hello 0"}).headers["x-llmspeed-cache"] == "hit-l1"
    done = time.time()
    deadline = time.monotonic() + 10
    while True:  # the first point sampled after the last request: its windows hold all of them
        d = httpx.get(f"{url}/dashboard/data", headers=AUTH, params={"since": before["now"]}).json()
        pts = [p for p in d["points"] if p["t"] > done]
        if pts or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert pts, d
    p = pts[0]
    assert p["tok_s"] > 0 and p["ttft_p50"] is not None and p["e2e_p99"] >= p["e2e_p50"] > 0
    assert 0 < p["resp_hit"] < 1 and p["kv_total"] > 0
    assert d["totals"]["requests"] >= 4 and d["totals"]["resp_hit"] > 0
    assert all(q["t"] > before["now"] for q in d["points"])


def test_reports_listing_and_files(dash_server, reports_dir: Path) -> None:
    url = dash_server.url
    lst = httpx.get(f"{url}/dashboard/reports", headers=AUTH).json()
    assert lst["enabled"] and [r["dir"] for r in lst["reports"]] == ["run1"]
    assert lst["reports"][0]["models"] == ["tiny"] and set(lst["reports"][0]["files"]) == {"report.html", "report.json"}
    html = httpx.get(f"{url}/dashboard/reports/file", params={"path": "run1/report.html"}, headers=AUTH)
    assert html.status_code == 200 and "results" in html.text and html.headers["content-type"].startswith("text/html")
    for bad in ("../secret.json", "notes.txt", "run1/../../secret.json", "/etc/passwd", "run1/\x00report.json",
                "x" * 5000 + "/report.json"):
        r = httpx.get(f"{url}/dashboard/reports/file", params={"path": bad}, headers=AUTH)
        assert r.status_code == 404, bad


def test_read_registry_sees_the_app_metrics(dash_server) -> None:
    snap = read_registry(dash_server.server.config.app.state.metrics.registry)
    assert "llmspeed:kv_cache_blocks_total" in snap
    assert any(k.startswith("llmspeed:time_to_first_token_seconds_bucket") for k in snap)


def test_serve_reports_must_be_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from llmspeed.cli.main import main

    assert main(["serve", "--reports", str(tmp_path / "missing")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: --reports must be an existing directory"), err
