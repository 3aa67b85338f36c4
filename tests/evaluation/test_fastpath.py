"""Fast-path agreement: teacher-forced engine steps vs the unfused float32 reference on the same weights."""

from __future__ import annotations

import pytest
import torch

import llmspeed
from llmspeed.evaluation.fastpath import fast_path_agreement
from llmspeed.layers.linear import FusedLinears
from llmspeed.llm import compress_
from llmspeed.runtime.plans import reference_paths


def _tokens(llm: llmspeed.LLM, n: int) -> list[int]:
    from tests.conftest import shakespeare_text

    return llm.tokenizer.encode(shakespeare_text(60_000))[:n]


def test_fp32_fast_path_agrees_with_reference(tiny_llm: llmspeed.LLM) -> None:
    toks = _tokens(tiny_llm, 2 * 40)
    res = fast_path_agreement(tiny_llm, toks, windows=2, prompt_len=16, new_tokens=24)
    assert res["kl_tokens"] == 2 * 24  # every step compared: the prefill's prediction and 23 decode steps
    assert res["top1_agreement"] == 1.0 and res["kl_mean"] < 1e-6  # float32 both ways: rounding only


@pytest.mark.parametrize("recipe", ["int8", "int4-g32-asym"])
def test_quantized_fast_path_agrees_with_reference(tiny_model_dir, recipe: str) -> None:
    llm = llmspeed.load(tiny_model_dir("llama"))
    compress_(llm, recipe)
    toks = _tokens(llm, 3 * 48)
    res = fast_path_agreement(llm, toks, windows=3, prompt_len=16, new_tokens=32)
    assert res["kl_tokens"] == 96
    # same weights; the decode kernels round activations to int8 per group (prefill: the measured dense path).
    # A random tiny model's logits are nearly tied, so top-1 flips easily: the KL is the sharper check.
    assert res["top1_agreement"] >= 0.9 and res["kl_mean"] < 1e-2


def test_reference_paths_unfuse_and_restore(tiny_model_dir) -> None:
    llm = llmspeed.load(tiny_model_dir("llama"))
    compress_(llm, "int8")
    assert llm.engine is not None  # building the engine fuses and plans
    attn = llm.model.model.layers[0].self_attn
    assert isinstance(attn.fused, FusedLinears)
    plan = attn.q_proj.plan
    mods = (attn.q_proj, attn.k_proj, attn.v_proj)
    with reference_paths(llm.model):  # the reference is just another plan: separate projections, plain torch
        assert attn.fused is None and attn.q_proj.plan.reference and not plan.reference
    assert attn.fused.valid(mods) and attn.q_proj.plan == plan


def test_too_few_tokens_is_an_error(tiny_llm: llmspeed.LLM) -> None:
    with pytest.raises(ValueError, match="need 80 tokens"):
        fast_path_agreement(tiny_llm, list(range(10)), windows=2, prompt_len=16, new_tokens=24)
    assert torch.is_grad_enabled()


def test_against_the_original_model(tiny_model_dir) -> None:
    orig = llmspeed.load(tiny_model_dir("llama"))
    llm = llmspeed.load(tiny_model_dir("llama"))
    compress_(llm, "int4-g32-asym,a8")
    toks = _tokens(llm, 2 * 40)
    same = fast_path_agreement(llm, toks, windows=2, prompt_len=16, new_tokens=24)
    vs_orig = fast_path_agreement(llm, toks, windows=2, prompt_len=16, new_tokens=24, original=orig)
    assert vs_orig["kl_tokens"] == same["kl_tokens"] == 48
    assert vs_orig["kl_mean"] > same["kl_mean"]  # int4 weights differ from the original; the fast path does not
