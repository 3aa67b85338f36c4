"""The `speed` preset: expands in place, compresses the tiny model, saves and reloads with identical logits."""

from __future__ import annotations

import torch

import llmspeed
from llmspeed.compress.api import Recipe
from llmspeed.compress.presets import SPEED
from llmspeed.llm import compress_


def test_speed_expands_in_place() -> None:
    steps = tuple(SPEED.split(","))
    assert Recipe.parse("speed").steps == steps
    assert Recipe.parse("int8,speed").steps == ("int8", *steps)  # expansion keeps order
    assert str(Recipe.parse("speed")) == SPEED


def test_speed_preset_loads_saves_reloads(tiny_model_dir, tmp_path) -> None:
    llm = llmspeed.load(tiny_model_dir("llama"))  # hidden 64, intermediate 128: int4 g32 fits
    compress_(llm, "speed")
    assert llm.recipe == list(SPEED.split(","))
    ids = torch.tensor([list(range(5, 25))])
    ref = llm.logits(ids)  # eager forward; compiled decode equals eager (tests/compress/test_compile_step.py)
    back = llmspeed.load(llm.save(tmp_path / "speed"))
    assert back.recipe == llm.recipe
    torch.testing.assert_close(back.logits(ids), ref, atol=0, rtol=0)
    assert back.engine.decode_fn is not None  # `compile` is re-applied at load


def test_a8_token_sets_int8_activation_plans_and_survives_save(tiny_model_dir, tmp_path) -> None:
    from llmspeed.layers.quant.int4 import Int4Linear
    from llmspeed.runtime.plans import reference_paths

    llm = llmspeed.load(tiny_model_dir("llama"))
    compress_(llm, "int4-g32-asym,a8")
    lins = [m for m in llm.model.modules() if isinstance(m, Int4Linear)]
    assert lins and all(m.plan.act_q8 for m in lins) and llm.options.act_q8
    ids = torch.tensor([list(range(5, 25))])
    back = llmspeed.load(llm.save(tmp_path / "a8"))
    assert back.recipe == ["int4-g32-asym", "a8"]
    assert all(m.plan.act_q8 for m in back.model.modules() if isinstance(m, Int4Linear))
    torch.testing.assert_close(back.logits(ids), llm.logits(ids), atol=0, rtol=0)
    # one decode row: the kernel (int8 activations) equals the plain-torch reference math of the recipe
    x = torch.randn(1, lins[0].in_features)
    with reference_paths(llm.model):
        ref = lins[0](x)
    torch.testing.assert_close(lins[0](x), ref, atol=1e-5, rtol=1e-4)
