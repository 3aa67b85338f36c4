"""The search space speaks the registry's language: presets expand like compress/presets.py, every sampled
candidate is a valid recipe, and the verdict orders the seeds."""

from __future__ import annotations

import optuna
import pytest

from llmspeed.auto.config import AutoConfig, Criteria, parse_fraction
from llmspeed.auto.space import (
    PRESET_PARAMS,
    SourceContext,
    params_to_candidate,
    preset_source,
    seed_order,
    suggest,
)
from llmspeed.compress.api import Recipe


@pytest.mark.parametrize("name", ["speed", "speed-a8"])
def test_presets_match_the_registry(name: str) -> None:
    assert params_to_candidate(PRESET_PARAMS[name]).steps == Recipe.parse(name).steps


def test_sampled_candidates_are_valid_recipes() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=1))
    kinds = set()
    for _ in range(150):
        t = study.ask()
        c = params_to_candidate(suggest(t, serving=True, max_threads=2))
        if c.steps:
            assert Recipe.parse(c.recipe).steps == c.steps
        assert 1 <= c.serving_dict["threads"] <= 2
        kinds |= {s.split("-")[0] for s in c.steps}
        assert not (any(s.startswith("svd") for s in c.steps) and any(s.startswith("int4") for s in c.steps)), \
            c.recipe  # svd-e ranks are not multiples of int4's groups: never sampled together
        assert not ("int8-dyn" in c.steps and "compile" in c.steps), c.recipe
        assert not (any(s.startswith("prune-mlp") for s in c.steps) and any(s.startswith("int4") for s in c.steps))
        study.tell(t, [1.0, 1.0])
    assert {"int4", "int8", "prune", "svd", "compile", "a8"} <= kinds


def test_verdict_orders_the_seeds() -> None:
    mem, ovh = seed_order("memory-bound"), seed_order("overhead-bound")
    assert PRESET_PARAMS[mem[0]]["weights"] == "int4"
    assert PRESET_PARAMS[ovh[0]]["compile"] and not PRESET_PARAMS[ovh[-1]]["compile"]
    assert sorted(mem) == sorted(ovh) == sorted(PRESET_PARAMS)
    cands = preset_source(SourceContext("throughput", None, 2))
    assert all(c.serving_dict["threads"] == 2 for c in cands)


@pytest.mark.parametrize(("text", "value"), [("3%", 0.03), ("0.03", 0.03), (0.5, 0.5), ("1e-2", 0.01)])
def test_parse_fraction(text: object, value: float) -> None:
    assert parse_fraction(text, "x") == pytest.approx(value)


@pytest.mark.parametrize("text", ["abc", "3", "-1%", "", "3%%"])
def test_parse_fraction_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_fraction(text, "x")


def test_criteria_excess() -> None:
    c = Criteria(max_ppl_increase=0.03, min_top1=0.9)
    assert c.excess({"delta_ppl": 0.03, "top1": 0.95}) == pytest.approx({"max_ppl_increase": 1.0,
                                                                          "min_top1": 0.5})
    assert c.worst({"delta_ppl": -0.01, "top1": 0.85}) == pytest.approx(1.5)
    assert c.worst({"delta_ppl": 0.0}) == float("inf")  # unmeasured top-1 is never accepted
    with pytest.raises(ValueError):
        Criteria(max_ppl_increase=None)
    with pytest.raises(ValueError, match="unknown objective"):
        AutoConfig(objective="fast")


def test_public_api_is_lazy_and_callable() -> None:
    import subprocess
    import sys

    code = ("import sys, llmspeed; assert callable(llmspeed.auto); "
            "assert 'torch' not in sys.modules and 'optuna' not in sys.modules, 'heavy import'; "
            "import llmspeed.auto.config; assert callable(llmspeed.auto) and llmspeed.AutoResult")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_load_prompts(tmp_path) -> None:
    from llmspeed.auto.workload import WorkPrompt, load_prompts

    p = tmp_path / "w.jsonl"
    p.write_text('{"prompt": "Repeat: a b c", "max_tokens": 16}\n\n{"prompt": "Hello"}\n')
    assert load_prompts(p, 32) == [WorkPrompt("Repeat: a b c", 16), WorkPrompt("Hello", 32)]
    p.write_text('{"prompt": "x", "max_tokens": 1}\n')
    with pytest.raises(ValueError, match="max_tokens"):
        load_prompts(p)
