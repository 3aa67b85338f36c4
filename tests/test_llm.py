"""The public API: timings are consistent, bad input fails clearly, lazy import is light."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

import llmspeed


def test_timings_sum_to_wall_time(tiny_llm) -> None:
    tiny_llm.generate("warm up", max_new_tokens=4)
    t0 = time.perf_counter()
    out = tiny_llm.generate("The quality of mercy is not strained", max_new_tokens=40, ignore_eos=True)[0]
    wall = time.perf_counter() - t0
    t = out.timings
    stages = t["t_pre"] + t["t_prefill"] + t["t_decode"] + t["t_post"]
    assert len(out.token_ids) == 40
    assert all(t[k] > 0 for k in ("t_pre", "t_prefill", "t_decode", "t_post"))
    assert stages <= wall
    assert stages >= 0.9 * wall, (stages, wall, t)  # engine bookkeeping is < 10% of the cycle
    assert 0 < t["ttft"] <= wall


def test_bad_inputs(tiny_llm) -> None:
    with pytest.raises(ValueError, match="empty"):
        tiny_llm.generate("", max_new_tokens=4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        tiny_llm.generate("hi", max_new_tokens=0)
    with pytest.raises(ValueError, match="context window"):
        tiny_llm.generate("word " * 400, max_new_tokens=4)  # tiny models have 256 positions
    with pytest.raises(ValueError, match="top_p"):
        tiny_llm.generate("hi", top_p=0.0)
    with pytest.raises(ValueError, match="dtype"):
        llmspeed.load("default", dtype="float8")


def test_generation_stops_at_context_window(tiny_llm) -> None:
    out = tiny_llm.generate("word " * 120, max_new_tokens=500, ignore_eos=True)[0]
    assert out.finish_reason == "length"
    assert len(out.prompt_token_ids) + len(out.token_ids) == tiny_llm.config.max_position


def test_logits_shape_and_dtype(tiny_llm) -> None:
    ids = torch.randint(0, 512, (3, 10))
    out = tiny_llm.logits(ids)
    assert out.shape == (3, 10, tiny_llm.config.vocab_size) and out.dtype == torch.float32


def test_bfloat16_load_generates(tiny_model_dir) -> None:
    llm = llmspeed.load(tiny_model_dir("llama"), dtype="bfloat16")
    assert llm.model.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    assert llm.model.model.norm.weight.dtype == torch.float32
    ref = llmspeed.load(tiny_model_dir("llama"))
    ids = torch.randint(0, 512, (1, 16))
    assert (llm.logits(ids) - ref.logits(ids)).abs().max() < 0.5
    assert len(llm.generate("hi", max_new_tokens=6, ignore_eos=True)[0].token_ids) == 6


def test_import_is_light() -> None:
    code = "import sys, llmspeed; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
