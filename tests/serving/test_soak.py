"""benchmarks/soak.py: the verdict's arithmetic on made-up runs, and a 9-second soak against a tiny-model server
(errors, dropped streams aborted by the server, nothing left running, JSON + PNG written)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


@pytest.fixture(scope="module")
def soak():
    spec = importlib.util.spec_from_file_location("llmspeed_soak", SOAK)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
        yield mod
    finally:
        sys.modules.pop(spec.name, None)


def _run(soak, rss: list[float], p99_scale: list[float], errors_at: tuple[float, ...] = ()) -> object:
    """A made-up run: 10 s buckets after a 10 s warm-up; RSS per bucket; latencies scaled per bucket."""
    run = soak.Run()
    for b, (mib, scale) in enumerate(zip(rss, p99_scale, strict=True)):
        t0 = 10.0 + 10 * b
        run.rss += [(t0 + k, mib) for k in range(0, 10, 2)]
        for k in range(100):
            t = t0 + k / 10
            run.records.append(soak.Record(t, "full-miss", scale * (0.1 + k / 1000), 200, t not in errors_at))
    return run


STATE_OK = {"healthy": True, "running": 0, "waiting": 0, "request_failures": 0.0}


def test_verdict_pass_and_each_way_to_fail(soak) -> None:
    cfg = soak.SoakConfig(minutes=50 / 60, warmup_minutes=10 / 60, bucket_s=10)
    good = _run(soak, [1000, 1010, 1020, 1030], [1, 1.1, 0.9, 1.2])
    bks = soak.buckets(good, cfg)
    assert len(bks) == 4 and bks[0]["start_s"] == 10.0 and bks[0]["requests"] == 100
    v = soak.verdict(good, bks, STATE_OK)
    assert v["pass"], v
    assert v["rss_growth"] == pytest.approx(0.03) and v["p99_last_over_first"] == pytest.approx(1.2)

    leak = _run(soak, [1000, 1030, 1060, 1090], [1, 1, 1, 1])
    assert soak.verdict(leak, soak.buckets(leak, cfg), STATE_OK)["checks"]["rss_growth_ok"] is False
    slow = _run(soak, [1000] * 4, [1, 1.3, 1.6, 2.0])
    v = soak.verdict(slow, soak.buckets(slow, cfg), STATE_OK)
    assert v["checks"]["p99_not_trending_up"] is False and v["p99_slope_ms_per_bucket"] > 0
    bad = _run(soak, [1000] * 4, [1] * 4, errors_at=(25.0,))
    v = soak.verdict(bad, soak.buckets(bad, cfg), STATE_OK)
    assert not v["pass"] and v["errors"] == 1 and soak.buckets(bad, cfg)[1]["errors"] == 1
    assert soak.verdict(good, bks, STATE_OK | {"running": 1})["checks"]["nothing_left_running"] is False
    assert soak.verdict(good, bks, STATE_OK | {"request_failures": 2.0})["pass"] is False


def test_short_trailing_bucket_is_dropped_and_config_checked(soak) -> None:
    cfg = soak.SoakConfig(minutes=44 / 60, warmup_minutes=10 / 60, bucket_s=10)  # 34 s after warm-up: 3 + 4 s
    assert len(soak.buckets(_run(soak, [1000] * 4, [1] * 4), cfg)) == 3
    assert soak.theil_sen([1.0, 2.0, 3.0, 4.0, 5.0, 100.0]) == pytest.approx(1.0)  # robust to one outlier
    with pytest.raises(ValueError, match="warmup_minutes"):
        soak.SoakConfig(minutes=1, warmup_minutes=1)


def test_short_soak_against_a_tiny_server(soak, make_server, tmp_path: Path) -> None:
    server = make_server(api_key=soak.KEY, model_name="soak")
    cfg = soak.SoakConfig(minutes=9 / 60, warmup_minutes=3 / 60, bucket_s=3, concurrency=3, max_tokens=8,
                          disconnect_frac=0.1, seed=1)
    rep = soak.soak(server.url, os.getpid(), cfg, "tiny", tmp_path)  # in-process server: RSS is this process's
    v = rep["verdict"]
    assert v["errors"] == 0, v["error_samples"]
    assert v["requests"] > 20 and len(rep["buckets"]) == 2
    assert {"disconnect", "full-hit", "stream-miss"} <= set(v["by_kind"]), v["by_kind"]
    c = v["checks"]
    assert c["no_errors"] and c["no_engine_failures"] and c["healthy_after"] and c["nothing_left_running"]
    assert rep["server"]["finished"].get("abort", 0) >= 1  # dropped streams were aborted, not run to the end
    assert rep["server"]["response_cache"]["hit-l1"] > 0
    saved = json.loads((tmp_path / "soak.json").read_text())
    assert saved["verdict"]["requests"] == v["requests"] and len(saved["rss"]) >= 4
    assert (tmp_path / "soak.png").stat().st_size > 10_000
