"""The `speed` preset: expands in place, compresses the tiny model, saves and reloads with identical logits."""

from __future__ import annotations

import torch

import llmspeed
from llmspeed.compress.api import Recipe, compress_
from llmspeed.compress.presets import SPEED


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
