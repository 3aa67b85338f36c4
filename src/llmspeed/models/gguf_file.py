"""Read a GGUF file into (ModelConfig, HF-named float32 state dict, Tokenizer).

llama.cpp's converter permutes the Q/K rows of Llama/Mistral checkpoints for its RoPE kernel; we undo that
so the weights are in Hugging Face's rotate-half layout again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmspeed.models.config import ModelConfig
from llmspeed.models.tokenizer import Tokenizer

log = logging.getLogger(__name__)

_LAYER_MAP = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight", "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_TOP_MAP = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
            "output.weight": "lm_head.weight"}
_SUPPORTED = ("llama", "mistral", "qwen2")
# llama.cpp pre-tokenizer names that split digits one by one before the byte-level regex
_DIGIT_SPLIT_PRE = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}


def open_gguf(path: str | Path) -> Any:
    import gguf

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"GGUF file not found: {p}")
    try:
        return gguf.GGUFReader(str(p))
    except Exception as e:  # truncated / not a GGUF: numpy and struct errors of all kinds
        raise ValueError(f"unreadable GGUF file {p}: {type(e).__name__}: {e}") from None


def field(reader: Any, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return default
    v = f.contents()
    return v


def unpermute_qk(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Inverse of llama.cpp's `permute` for attn_q / attn_k rows ([out, in] or [out])."""
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, dim, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def gguf_config(reader: Any) -> ModelConfig:
    arch = field(reader, "general.architecture")
    if arch not in _SUPPORTED:
        raise ValueError(f"unsupported GGUF architecture {arch!r}; supported: {', '.join(_SUPPORTED)}")

    def a(key: str, default: Any = None) -> Any:
        return field(reader, f"{arch}.{key}", default)

    n_heads = int(a("attention.head_count"))
    hidden = int(a("embedding_length"))
    tokens = reader.fields["tokenizer.ggml.tokens"]
    vocab = int(a("vocab_size", len(tokens.data)))
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    has_bias = any(t.name.endswith("attn_q.bias") for t in reader.tensors)
    eos = field(reader, "tokenizer.ggml.eos_token_id")
    rope_scaling = None
    if a("rope.scaling.type") == "linear":
        rope_scaling = {"rope_type": "linear", "factor": float(a("rope.scaling.factor"))}
    return ModelConfig(
        arch="llama", model_type="llama" if arch in ("llama", "mistral") else arch, vocab_size=vocab,
        hidden_size=hidden, n_layers=int(a("block_count")), n_heads=n_heads,
        n_kv_heads=int(a("attention.head_count_kv", n_heads)),
        head_dim=int(a("attention.key_length", hidden // n_heads)),
        intermediate_size=int(a("feed_forward_length")), max_position=int(a("context_length", 2048)),
        norm_eps=float(a("attention.layer_norm_rms_epsilon", 1e-6)), rope_theta=float(a("rope.freq_base", 10000.0)),
        rope_scaling=rope_scaling, qkv_bias=has_bias, tie_embeddings=not has_output,
        bos_token_id=field(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_ids=(int(eos),) if eos is not None else (),
    )


def gguf_state_dict(reader: Any, cfg: ModelConfig, progress: Any = None) -> dict[str, torch.Tensor]:
    from gguf.quants import dequantize

    arch = field(reader, "general.architecture")
    sd: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        name = t.name
        if name in _TOP_MAP:
            key = _TOP_MAP[name]
        elif name.startswith("blk."):
            _, idx, rest = name.split(".", 2)
            if rest not in _LAYER_MAP:
                raise ValueError(f"unexpected GGUF tensor {name}")
            key = f"model.layers.{idx}.{_LAYER_MAP[rest]}"
        else:
            log.debug("skipping GGUF tensor %s", name)
            continue
        arr = dequantize(t.data, t.tensor_type)  # float32, numpy order == torch [out, in]
        w = torch.from_numpy(np.array(arr, dtype=np.float32, copy=True))  # writable copy
        if arch in ("llama", "mistral") and (".attn_q." in name or ".attn_k." in name):
            w = unpermute_qk(w, cfg.n_heads if ".attn_q." in name else cfg.n_kv_heads)
        sd[key] = w.contiguous()
        if progress is not None:
            progress()
    return sd


def gguf_tokenizer(reader: Any, cfg: ModelConfig) -> Tokenizer:
    from tokenizers import AddedToken, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    kind = field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"unsupported GGUF tokenizer model {kind!r} (supported: gpt2 byte-level BPE)")
    tokens = [str(x) for x in field(reader, "tokenizer.ggml.tokens")]
    types = list(field(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
    merges = [tuple(str(m).split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges", [])]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    pre = field(reader, "tokenizer.ggml.pre", "default")
    if pre in _DIGIT_SPLIT_PRE:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    special = [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types, strict=False) if ty in (3, 4)]
    tok.add_special_tokens(special)
    return Tokenizer(tok, bos_token_id=cfg.bos_token_id, eos_token_ids=cfg.eos_token_ids,
                     add_bos=bool(field(reader, "tokenizer.ggml.add_bos_token", False)),
                     chat_template=field(reader, "tokenizer.chat_template"))
