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
        # (without ModelFacts the MLP width is unknown: prune-mlp never meets int4; see test_mlp_amounts_fit_int4)
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


def test_neighbours_are_valid_recipes_and_single_stream_only() -> None:
    from llmspeed.auto.space import NEIGHBOUR_PARAMS, neighbour_source, optuna_params

    cands = neighbour_source(SourceContext("decode", None, 2))
    assert [c.recipe for c in cands] == list(NEIGHBOUR_PARAMS)  # each name is the recipe it expands to
    for c in cands:
        assert Recipe.parse(c.recipe).steps == c.steps
        replayed = suggest(optuna.trial.FixedTrial(optuna_params(c.params, False, 2)), serving=False, max_threads=2)
        assert params_to_candidate(replayed).key == c.key  # enqueued for TPE, it samples back to itself
    assert neighbour_source(SourceContext("throughput", None, 2)) == []


def test_gated_prune_and_svd_replay() -> None:
    from llmspeed.auto.space import BASE_PARAMS, optuna_params

    p = BASE_PARAMS | {"weights": "int8", "prune": "wanda", "prune_amount": 20, "svd": "e0.95"}
    asked = optuna_params(p, False, 2)
    assert asked["prune_on"] is True and asked["prune"] == "wanda" and asked["amount_wanda"] == 20
    assert asked["svd_on"] is True and asked["svd"] == "e0.95"
    plain = optuna_params(BASE_PARAMS | {"weights": "int8"}, False, 2)
    assert plain["prune_on"] is False and plain["svd_on"] is False and "prune" not in plain and "svd" not in plain


def test_canonical_steps_orders_like_the_search() -> None:
    from llmspeed.auto.space import canonical_steps

    assert canonical_steps(["compile", "int4-g32-asym", "int8-head-g32"]) == ("int8-head-g32", "int4-g32-asym",
                                                                              "compile")
    assert canonical_steps(["a8", "int8", "svd-e0.9", "prune-2:4"]) == ("prune-2:4", "svd-e0.9", "int8", "a8")


def test_served_steps_name_what_serve_runs(tiny_model_dir) -> None:
    """`default` is served as its shipped blocks, compiled: auto (starting from default:fp32) remakes them from the
    float weights; a model directory is served as it is, compiled."""
    from llmspeed.auto.api import served_steps
    from llmspeed.auto.space import canonical_steps

    assert canonical_steps(served_steps("default")) == ("int8-head-g32", "int4-g32-asym", "compile")
    assert served_steps("default:fp32") == ("compile",)
    assert served_steps(str(tiny_model_dir("llama"))) == ("compile",)


def test_mlp_amounts_fit_int4() -> None:
    """With the model's MLP width known, prune-mlp removes whole multiples of the largest int4 group, so the
    pruned model still takes int4 (SmolLM2-135M: 1536 channels, groups 32 and 64)."""
    from llmspeed.auto.space import ModelFacts

    f = ModelFacts((32, 64), 1536)
    assert f.mlp_amounts == (4.1667, 8.3333, 20.8333) and f.mlp_fits_int4
    from llmspeed.compress.prune.structured import _n_remove

    assert [_n_remove(a, 1536) for a in f.mlp_amounts] == [64, 128, 320]  # the step's own rounding
    assert not ModelFacts((32, 64), 1000).mlp_fits_int4 and ModelFacts((32, 64), 1000).mlp_amounts == (5, 10, 20)
    assert not ModelFacts((), 1536).mlp_fits_int4
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=3))
    both = 0
    for _ in range(300):
        t = study.ask()
        c = params_to_candidate(suggest(t, serving=False, max_threads=2, facts=f))
        if any(s.startswith("prune-mlp") for s in c.steps) and any(s.startswith("int4") for s in c.steps):
            both += 1
            assert Recipe.parse(c.recipe).steps == c.steps
            assert c.steps[0] in ("prune-mlp-4.1667", "prune-mlp-8.3333", "prune-mlp-20.8333")
        study.tell(t, [1.0, 1.0])
    assert both


def test_mlp_fits_int4_when_the_amounts_come_out_round() -> None:
    """1280 channels, group 64: the fitting amounts are exactly 5/10/20 % (64/128/256) and still fit int4 (the
    check once compared the amounts with the plain ones and said no)."""
    from llmspeed.auto.space import ModelFacts

    f = ModelFacts((32, 64), 1280)
    assert f.mlp_amounts == (5.0, 10.0, 20.0) and f.mlp_fits_int4
