"""`llmspeed loadtest` against a live loopback server: bounded, JSON + PNG, repeats hit the response cache."""

from __future__ import annotations

import json

import pytest


def test_loadtest_cli_rate(make_server, tmp_path, capsys) -> None:
    from llmspeed.cli.main import main

    srv = make_server(api_key="lt-key")
    rc = main(["loadtest", srv.url, "--rate", "20", "--duration", "5", "--requests", "16", "--max-tokens", "8",
               "--api-key", "lt-key", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "TTFT" in out and "goodput" in out
    s = json.loads((tmp_path / "loadtest.json").read_text())
    assert s["completed"] == 16 and s["errors"] == 0
    assert s["latency_s"]["ttft"]["p50"] > 0 and s["latency_s"]["e2el"]["p99"] >= s["latency_s"]["e2el"]["p50"]
    assert s["response_cache"].get("hit-l1", 0) > 0  # the FAQ mix repeats questions
    assert s["config"]["api_key"] == "***"
    assert (tmp_path / "loadtest.png").stat().st_size > 1000


def test_loadtest_concurrency_and_bad_args(make_server) -> None:
    from llmspeed.serving.loadtest import LoadTestConfig, run_loadtest

    srv = make_server(cache_l1=0)
    s = run_loadtest(LoadTestConfig(url=srv.url, concurrency=4, duration=5, requests=8, max_tokens=6))
    assert s["completed"] == 8 and s["response_cache"] == {"miss": 8}
    with pytest.raises(ValueError, match="exactly one"):
        LoadTestConfig(url=srv.url, rate=1.0, concurrency=2)
    with pytest.raises(ValueError, match="http"):
        LoadTestConfig(url="127.0.0.1:1", rate=1.0)
