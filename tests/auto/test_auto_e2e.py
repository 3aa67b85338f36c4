"""One real `llmspeed.auto` run on a tiny random-init model: two trials, full eval, benchmark, ablation, saved dir."""

from __future__ import annotations

import json
from pathlib import Path

import llmspeed
from llmspeed.auto.space import PRESET_PARAMS, params_to_candidate


def test_auto_end_to_end_two_trials(tiny_model_dir, tmp_path: Path) -> None:
    llm = llmspeed.load(tiny_model_dir("llama"))

    def two(ctx):
        return [params_to_candidate(PRESET_PARAMS["int8"], "preset:int8"),
                params_to_candidate(PRESET_PARAMS["int4-g32-asym"], "preset:int4-g32-asym")]

    out = tmp_path / "best"
    res = llmspeed.auto(llm, objective="decode", max_ppl_increase=5.0, max_kl=5.0, budget_minutes=20,
                        max_trials=2, out=out, sources=[two], profile=False, screen_eval_tokens=128,
                        full_eval_tokens=256, new_tokens=8, repeats=1)
    assert len(res.trials) == 2 and {r["candidate"]["recipe"] for r in res.trials} == {"int8", "int4-g32-asym"}
    for r in res.trials:
        q = r["screen"]["quality"]
        assert q["n_tokens"] <= 128 and q["delta_ppl"] == q["delta_ppl_pct"] / 100
        assert r["screen"]["speed"]["decode_tok_s"] > 0 and r["machine"]["cpu"]
    assert res.accepted, res.message
    chosen = res.chosen
    assert chosen["full"]["quality"]["n_tokens"] > 128  # accepted on the full eval, not the slice
    assert res.baseline["decode_tok_s"] > 0 and chosen["bench"]["speed"]["decode_tok_s"] > 0
    steps = res.recipe.split(",")
    assert [row["added"] for row in res.ablation] == ["original", *steps]
    assert res.ablation[0]["cut_pct"] == 0.0
    for row in res.ablation:
        assert abs(row["T"] - sum(row[k] for k in ("t_pre", "t_prefill", "t_decode", "t_post"))) < 1e-9
    # DIR is an ordinary saved model, with the search's outputs beside its files
    again = llmspeed.load(out)
    assert again.recipe == steps
    assert again.generate("Hello", max_new_tokens=3, ignore_eos=True)[0].token_ids
    for name in ("trials.json", "trials.db", "report.html", "front_speed.png", "front_size.png"):
        assert (out / name).is_file(), name
    doc = json.loads((out / "trials.json").read_text())
    assert doc["recipe"] == res.recipe and doc["fronts"]["speed"]
    assert "cycle-time cut" in (out / "report.html").read_text()


def test_auto_throughput_measures_serving_settings(tiny_model_dir, tmp_path: Path) -> None:
    """The throughput objective runs concurrent requests under each candidate's engine settings and threads."""
    from llmspeed.auto.space import SERVING_DEFAULTS

    llm = llmspeed.load(tiny_model_dir("llama"))

    def one(ctx):
        p = PRESET_PARAMS["int8"] | SERVING_DEFAULTS | {"max_batch": 4, "threads": 1}
        return [params_to_candidate(p, "preset:int8")]

    res = llmspeed.auto(llm, objective="throughput", max_ppl_increase=5.0, budget_minutes=10, max_trials=1,
                        sources=[one], profile=False, screen_eval_tokens=128, full_eval_tokens=256, new_tokens=8,
                        repeats=1, concurrency=4, ablation=False)
    assert res.accepted, res.message
    assert res.serving == {"max_batch": 4, "max_batch_tokens": SERVING_DEFAULTS["max_batch_tokens"], "threads": 1}
    sp = res.chosen["bench"]["speed"]
    assert sp["throughput_tok_s"] > 0 and sp["ttft_ms"] > 0 and sp["concurrency"] == 4
    assert res.baseline["throughput_tok_s"] > 0 and res.baseline["concurrency"] == 4  # the server's defaults
    assert res.baseline_name == "server defaults" and res.ratio > 0
