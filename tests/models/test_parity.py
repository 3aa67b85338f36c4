"""Our model code vs Hugging Face transformers on the same weights (float32, max abs diff <= 1e-3)."""

from __future__ import annotations

import pytest
import torch

import llmspeed

TOL = 1e-3  # HF's own eager and sdpa paths differ by ~6e-5


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "gpt2"])
def test_tiny_logits_match_hf(tiny_model_dir, arch: str) -> None:
    import transformers as tf

    d = tiny_model_dir(arch)
    llm = llmspeed.load(d)
    hf = tf.AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager").eval()
    ids = torch.randint(0, llm.config.vocab_size, (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(ids).logits
    out = llm.logits(ids)
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= TOL
    assert ref.std().item() > 0.1  # the comparison is not between two near-constant tensors


def test_qwen2_has_qkv_bias_loaded(tiny_model_dir) -> None:
    llm = llmspeed.load(tiny_model_dir("qwen2"))
    attn = llm.model.model.layers[0].self_attn
    assert attn.q_proj.bias is not None and attn.q_proj.bias.abs().sum() > 0
    assert not llm.config.tie_embeddings


@pytest.mark.slow
def test_default_model_logits_match_hf_gguf_loader(default_llm) -> None:
    """transformers' own GGUF loader (which undoes llama.cpp's Q/K permutation) is the reference."""
    import transformers as tf

    from llmspeed.models.default_model import default_gguf_path

    g = default_gguf_path()
    hf = tf.AutoModelForCausalLM.from_pretrained(g.parent, gguf_file=g.name, attn_implementation="eager",
                                                 dtype=torch.float32).eval()
    ids = torch.tensor([default_llm.tokenizer.encode("The capital of France is Paris, and the capital of")])
    with torch.no_grad():
        ref = hf(ids).logits
    out = default_llm.logits(ids)
    assert (out - ref).abs().max().item() <= TOL
    assert out[0, -1].argmax() == ref[0, -1].argmax()


@pytest.mark.slow
def test_default_tokenizer_matches_transformers_gguf_tokenizer(default_llm) -> None:
    import transformers as tf

    from llmspeed.models.default_model import default_gguf_path

    g = default_gguf_path()
    ref = tf.AutoTokenizer.from_pretrained(g.parent, gguf_file=g.name)
    # transformers' GGUF converter ignores the `smollm` pre-tokenizer's digit split: compare on digit-free text
    text = ("To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
            "  The slings and arrows of outrageous fortune... <|im_start|>user\nhello<|im_end|> café naïve 日本語")
    assert default_llm.tokenizer.encode(text) == ref.encode(text, add_special_tokens=False)
    # digits are split one by one, like SmolLM2's own tokenizer.json (Digits(individual_digits=True))
    ids = default_llm.tokenizer.encode("2024")
    assert len(ids) == 4 and default_llm.tokenizer.decode(ids) == "2024"
