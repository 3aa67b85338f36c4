"""Structured pruning: matrices really shrink, zero-importance units go first and change nothing, save/load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import llmspeed
from llmspeed.compress.calibration import get_calibration

PROMPT = "Now is the winter of our discontent"


@pytest.fixture()
def calib(tiny_llm):
    return get_calibration(tiny_llm.tokenizer, n=4, seq_len=32)


def _ids(llm) -> torch.Tensor:
    return torch.tensor([llm.tokenizer.encode(PROMPT)])


def test_mlp_zero_importance_channels_removed_outputs_unchanged(tiny_llm, calib, tmp_path: Path) -> None:
    dead = torch.arange(0, 128, 4)  # 32 of 128 channels (25%) write nothing
    with torch.no_grad():
        for layer in tiny_llm.model.model.layers:
            layer.mlp.down_proj.weight[:, dead] = 0.0
    alive = [j for j in range(128) if j not in set(dead.tolist())]
    gate0 = tiny_llm.model.model.layers[0].mlp.gate_proj.weight[alive].clone()
    ids = _ids(tiny_llm)
    ref = tiny_llm.logits(ids)
    ref_gen = tiny_llm.generate(PROMPT, max_new_tokens=8, ignore_eos=True)[0].token_ids
    rep = llmspeed.compress_(tiny_llm, "prune-mlp-25", calib=calib)[0]
    mlp = tiny_llm.model.model.layers[0].mlp
    assert mlp.gate_proj.weight.shape == (96, 64) and mlp.down_proj.weight.shape == (64, 96)
    assert torch.equal(mlp.gate_proj.weight, gate0)  # exactly the dead channels went
    assert tiny_llm.config.intermediate_size == 96 and len(rep.changed) == 6
    torch.testing.assert_close(tiny_llm.logits(ids), ref, rtol=0, atol=1e-5)
    assert tiny_llm.generate(PROMPT, max_new_tokens=8, ignore_eos=True)[0].token_ids == ref_gen
    back = llmspeed.load(tiny_llm.save(tmp_path / "mlp"))
    assert back.config.intermediate_size == 96
    assert torch.equal(back.logits(ids), tiny_llm.logits(ids))


def test_heads_zero_importance_group_removed_outputs_unchanged(tiny_llm, calib, tmp_path: Path) -> None:
    # tiny llama: 4 query heads, 2 KV heads (G = 2), head_dim 16; group 1 = query heads 2,3 -> o_proj cols 32..63
    with torch.no_grad():
        for layer in tiny_llm.model.model.layers:
            layer.self_attn.o_proj.weight[:, 32:64] = 0.0
    k0 = tiny_llm.model.model.layers[0].self_attn.k_proj.weight[:16].clone()
    ids = _ids(tiny_llm)
    ref = tiny_llm.logits(ids)
    ref_gen = tiny_llm.generate(PROMPT, max_new_tokens=8, ignore_eos=True)[0].token_ids
    llmspeed.compress_(tiny_llm, "prune-heads-50", calib=calib)
    attn = tiny_llm.model.model.layers[0].self_attn
    assert (attn.n_heads, attn.n_kv_heads) == (2, 1)
    assert attn.q_proj.weight.shape == (32, 64) and attn.k_proj.weight.shape == (16, 64)
    assert attn.o_proj.weight.shape == (64, 32) and torch.equal(attn.k_proj.weight, k0)
    cfg = tiny_llm.config
    assert (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim) == (2, 1, 16)
    torch.testing.assert_close(tiny_llm.logits(ids), ref, rtol=0, atol=1e-5)
    assert tiny_llm.generate(PROMPT, max_new_tokens=8, ignore_eos=True)[0].token_ids == ref_gen  # paged KV path
    back = llmspeed.load(tiny_llm.save(tmp_path / "heads"))
    assert (back.config.n_heads, back.config.n_kv_heads) == (2, 1)
    assert torch.equal(back.logits(ids), tiny_llm.logits(ids))


def test_structured_edge_cases(tiny_llm, calib) -> None:
    rep = llmspeed.compress_(tiny_llm, "prune-heads-10", calib=calib)[0]  # 10% of 2 groups rounds to 0
    assert not rep.changed and any("changed nothing" in n for n in rep.notes)
    with pytest.raises(ValueError, match=r"\(0, 100\)"):
        llmspeed.Recipe.parse("prune-mlp-100")
    llmspeed.compress_(tiny_llm, "int8")
    with pytest.raises(ValueError, match="before quantization"):
        llmspeed.compress_(tiny_llm, "prune-mlp-50", calib=calib)


def test_structured_pruning_refuses_gpt2(tiny_model_dir, calib) -> None:
    gpt = llmspeed.load(tiny_model_dir("gpt2"))
    with pytest.raises(ValueError, match="Llama-family"):
        llmspeed.compress_(gpt, "prune-mlp-25", calib=calib)
