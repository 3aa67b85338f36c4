"""GGUF export: read back by transformers' GGUF loader and by llmspeed, with matching logits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import llmspeed
from llmspeed.export import export
from llmspeed.export.gguf import permute_qk
from llmspeed.models.gguf_file import unpermute_qk

IDS = torch.tensor([[5, 17, 300, 42, 7, 99, 260, 11, 3, 400, 128, 64]])


def _hf_gguf_logits(path: Path) -> torch.Tensor:
    import transformers as tf

    m = tf.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    with torch.no_grad():
        return m.eval()(IDS).logits.float()


def test_permute_is_inverse_of_unpermute() -> None:
    w = torch.randn(4 * 16, 8)
    assert torch.equal(unpermute_qk(permute_qk(w, 4), 4), w)
    assert not torch.equal(permute_qk(w, 4), w)


def test_gguf_f32_roundtrip(tiny_llm: llmspeed.LLM, tmp_path: Path) -> None:
    ref = tiny_llm.logits(IDS)
    out = export(tiny_llm, "gguf", tmp_path / "tiny.gguf")
    assert out.is_file() and not list(tmp_path.glob(".tiny.gguf.tmp-*"))
    assert (_hf_gguf_logits(out) - ref).abs().max().item() < 1e-3
    back = llmspeed.load(out)
    assert (back.logits(IDS) - ref).abs().max().item() < 1e-3
    text = "To be, or not to be"
    assert back.tokenizer.encode(text) == tiny_llm.tokenizer.encode(text)
    assert back.tokenizer.chat_template == tiny_llm.tokenizer.chat_template
    assert back.config.eos_token_ids == tiny_llm.config.eos_token_ids


def test_gguf_int8_is_q8_0(tiny_llm: llmspeed.LLM, tmp_path: Path) -> None:
    import gguf

    llmspeed.compress_(tiny_llm, "int8")
    ref = tiny_llm.logits(IDS)
    out = export(tiny_llm, "gguf", tmp_path / "q8.gguf", dtype="f16")
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(str(out)).tensors}
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert types["blk.1.ffn_down.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert types["token_embd.weight"] == gguf.GGMLQuantizationType.F16  # embeddings are not int8 by default
    assert types["output_norm.weight"] == gguf.GGMLQuantizationType.F32
    # Q8_0 re-quantizes the int8 weights with 32-wide blocks (≈ the same grid), llmspeed runs bf16 activations
    err = (_hf_gguf_logits(out) - ref).abs().max().item()
    assert err < 5e-2, err
    assert (llmspeed.load(out).logits(IDS) - ref).abs().max().item() < 5e-2


def test_gguf_gpt2_is_a_clear_error(tiny_model_dir: Callable[..., Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="llama architecture only"):
        export(llmspeed.load(tiny_model_dir("gpt2")), "gguf", tmp_path / "g.gguf")
    assert not list(tmp_path.iterdir())
