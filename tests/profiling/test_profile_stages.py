"""Profile on the tiny model: stages add up to the wall time, ops grouped by module, CLI JSON and trace."""

from __future__ import annotations

import json

import pytest

from llmspeed.profiling import roofline
from llmspeed.profiling.runner import ProfileConfig, run_profile
from llmspeed.profiling.stages import StageBreakdown, from_timings, median_breakdown


@pytest.fixture()
def fake_calibration(monkeypatch):
    cal = roofline.Calibration("cpu", "t", 2, 8, 20.0, 22.0, 150.0, 1.2)
    monkeypatch.setattr(roofline, "load_or_measure", lambda recalibrate=False, cfg=None: cal)
    return cal


def test_stage_breakdown_math() -> None:
    s = StageBreakdown(t_pre=0.1, t_prefill=0.2, t_decode=0.6, t_post=0.1, wall=1.0, new_tokens=7)
    assert s.total == pytest.approx(1.0) and s.t_compute == pytest.approx(0.8)
    assert s.shares["t_decode"] == pytest.approx(60.0) and s.tpot == pytest.approx(0.1)
    m = median_breakdown([s, StageBreakdown(0.3, 0.2, 0.6, 0.1, 1.2, 7), s])
    assert m.t_pre == pytest.approx(0.1) and m.wall == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ProfileConfig(new_tokens=0)


def test_stage_times_sum_to_wall(tiny_llm) -> None:
    tiny_llm.generate("warm up", max_new_tokens=4, ignore_eos=True)
    out = tiny_llm.generate("Stage times add up to the wall time", max_new_tokens=24, ignore_eos=True)[0]
    s = from_timings(out.timings, len(out.token_ids))
    assert abs(s.total - s.wall) <= 0.10 * s.wall


def test_run_profile_tiny(tiny_llm, fake_calibration, tmp_path) -> None:
    trace = tmp_path / "trace.json"
    r = run_profile(tiny_llm, ProfileConfig(prompt_len=16, new_tokens=8, repeats=2, profile_steps=4,
                                            trace_path=str(trace)))
    # the stages account for the request's wall time, up to the loop's own bookkeeping between steps (a few ms
    # on a loaded 2-core machine, which is 10 % of this tiny model's 40 ms)
    assert abs(r["stages"]["total"] - r["stages"]["wall"]) <= max(0.10 * r["stages"]["wall"], 0.010)
    assert r["ops"]["steps"] == 4 and r["ops"]["top_ops"]
    groups = r["ops"]["groups_ms_per_step"]
    assert groups["attention"] > 0 and groups["mlp"] > 0 and groups["norm"] > 0
    assert r["verdict"]["bound"] in ("memory-bound", "compute-bound", "overhead-bound", "preprocessing-bound")
    assert r["decode"]["overhead_ms_per_step"] >= 0 and r["decode"]["weight_bytes_per_step"] > 0
    assert "traceEvents" in json.loads(trace.read_text())
    json.dumps(r)


def test_profile_cli_json(tiny_model_dir, fake_calibration, capsys) -> None:
    from llmspeed.cli.main import main

    rc = main(["profile", "--model", str(tiny_model_dir("llama")), "--prompt-len", "8", "--new-tokens", "4",
               "--repeats", "1", "--json"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert r["new_tokens"] == 4 and "verdict" in r


def test_profile_cli_bad_input(capsys) -> None:
    from llmspeed.cli.main import main

    assert main(["profile", "--new-tokens", "0"]) == 2
    assert "new-tokens" in capsys.readouterr().err
