"""int8-head[-g32]: quantized tied lm_head + embedding on the same codes; saved once; round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import llmspeed
from llmspeed.layers.quant.embedding import Int8Embedding, Int8GroupEmbedding
from llmspeed.layers.quant.int8 import Int8Linear
from llmspeed.layers.quant.int8g import Int8GroupLinear


def test_int8_head_tied(tiny_llm: llmspeed.LLM, tmp_path: Path) -> None:
    m = tiny_llm.model
    emb_w = m.model.embed_tokens.weight.detach().clone()  # [V, C]
    ids = torch.randint(0, tiny_llm.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(0))
    before = tiny_llm.logits(ids)
    rep = llmspeed.compress_(tiny_llm, "int8-head,int8", progress=False)
    assert rep[0].changed == ["lm_head", "model.embed_tokens"]
    assert isinstance(m.lm_head, Int8Linear) and isinstance(m.model.embed_tokens, Int8Embedding)
    # embedding rows are the head's dequantized rows: error <= scale / 2 per element
    rows = m.model.embed_tokens(ids)  # [2, 10, C]
    err = (rows - emb_w[ids]).abs()
    assert bool((err <= m.lm_head.scales[ids].unsqueeze(-1) / 2 + 1e-7).all())
    after = tiny_llm.logits(ids)
    b, a = before - before.mean(-1, keepdim=True), after - after.mean(-1, keepdim=True)
    assert float((a - b).norm() / b.norm()) < 0.05
    out = tiny_llm.save(tmp_path / "h")
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "lm_head.weight_int8" in keys and not any(k.startswith("model.embed_tokens") for k in keys)
    loaded = llmspeed.load(out)
    assert torch.equal(loaded.logits(ids), after)
    assert len(loaded.generate("To be", max_new_tokens=4, ignore_eos=True)[0].token_ids) == 4


def test_int8_head_untied(tiny_model_dir, tmp_path: Path) -> None:
    llm = llmspeed.load(tiny_model_dir("qwen2"))  # tie_word_embeddings=False
    rep = llmspeed.compress_(llm, "int8-head", progress=False)
    assert rep[0].changed == ["lm_head"] and "stays float32" in rep[0].notes[0]
    assert isinstance(llm.model.model.embed_tokens, torch.nn.Embedding)
    ids = torch.arange(12).unsqueeze(0)
    assert torch.equal(llmspeed.load(llm.save(tmp_path / "q")).logits(ids), llm.logits(ids))


def test_int8_head_g32_tied(tiny_llm: llmspeed.LLM, tmp_path: Path) -> None:
    """-g32: one float16 scale per 32 columns; the tied embedding gathers the head's exact rows; saved once."""
    m = tiny_llm.model
    emb_w = m.model.embed_tokens.weight.detach().clone()  # [V, C]
    ids = torch.randint(0, tiny_llm.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(0))
    before = tiny_llm.logits(ids)
    rep = llmspeed.compress_(tiny_llm, "int8-head-g32", progress=False)
    assert rep[0].step == "int8-head-g32" and rep[0].changed == ["lm_head", "model.embed_tokens"]
    assert tiny_llm.recipe == ["int8-head-g32"]
    head = m.lm_head
    assert isinstance(head, Int8GroupLinear) and isinstance(m.model.embed_tokens, Int8GroupEmbedding)
    w = head.dequantized_weight()  # [V, C]
    assert torch.equal(m.model.embed_tokens(ids), w[ids])  # the head's rows, exactly
    d = head.weight_scales.float().repeat_interleave(32, dim=1)  # [V, C]
    assert bool(((w - emb_w).abs() <= d / 2 * (1 + 1e-6)).all())  # round to nearest on each group's grid
    after = tiny_llm.logits(ids)
    b, a = before - before.mean(-1, keepdim=True), after - after.mean(-1, keepdim=True)
    assert float((a - b).norm() / b.norm()) < 0.02
    out = tiny_llm.save(tmp_path / "g")
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert {"lm_head.weight_int8", "lm_head.weight_scales"} <= keys
    assert not any(k.startswith("model.embed_tokens") for k in keys)
    loaded = llmspeed.load(out)
    assert loaded.recipe == ["int8-head-g32"] and isinstance(loaded.model.lm_head, Int8GroupLinear)
    assert torch.equal(loaded.logits(ids), after)


def test_int8_head_g32_untied_and_bad_group(tiny_model_dir, tmp_path: Path) -> None:
    llm = llmspeed.load(tiny_model_dir("qwen2"))  # tie_word_embeddings=False
    rep = llmspeed.compress_(llm, "int8-head-g32", progress=False)
    assert rep[0].changed == ["lm_head"] and isinstance(llm.model.lm_head, Int8GroupLinear)
    assert isinstance(llm.model.model.embed_tokens, torch.nn.Embedding)
    ids = torch.arange(12).unsqueeze(0)
    assert torch.equal(llmspeed.load(llm.save(tmp_path / "q")).logits(ids), llm.logits(ids))
    with pytest.raises(ValueError, match="int8-head group must be one of"):
        llmspeed.compress_(llm, "int8-head-g64", progress=False)
