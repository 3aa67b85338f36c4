"""GGUF export for the llama architecture (llama.cpp tensor names, Q/K row permutation, tokenizer metadata).

Float tensors are F32 (or F16 with dtype="f16"; 1-D norms always F32); layers that are int8 in llmspeed are
re-quantized from their dequantized weight to Q8_0 (32-wide blocks, one f16 scale each) when K % 32 == 0.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmspeed.export.dense import dense_state_dict
from llmspeed.models.config import ModelConfig
from llmspeed.models.gguf_file import _LAYER_MAP, _TOP_MAP

log = logging.getLogger(__name__)
_HF_TO_LAYER = {v: k for k, v in _LAYER_MAP.items()}
_HF_TO_TOP = {v: k for k, v in _TOP_MAP.items()}
Q8_BLOCK = 32
TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_UNUSED = 1, 3, 5


def permute_qk(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's `permute` of attn_q / attn_k rows (inverse of gguf_file.unpermute_qk)."""
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, 2, dim, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def gguf_name(hf_name: str) -> str:
    if hf_name in _HF_TO_TOP:
        return _HF_TO_TOP[hf_name]
    parts = hf_name.split(".", 3)  # model.layers.{i}.{rest}
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] in _HF_TO_LAYER:
        return f"blk.{parts[2]}.{_HF_TO_LAYER[parts[3]]}"
    raise ValueError(f"no GGUF name for tensor {hf_name!r}")


def _gguf_arch(cfg: ModelConfig) -> str:
    if cfg.arch != "llama":
        raise ValueError(f"GGUF export supports the llama architecture only, not {cfg.arch!r}; use --format hf")
    return "qwen2" if cfg.model_type == "qwen2" else "llama"  # mistral is written as llama, as llama.cpp does


def _metadata(w: Any, cfg: ModelConfig, arch: str) -> None:
    w.add_name("llmspeed-export")
    w.add_block_count(cfg.n_layers)
    w.add_context_length(cfg.max_position)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.n_heads)
    w.add_head_count_kv(cfg.n_kv_heads)
    w.add_rope_freq_base(float(cfg.rope_theta))
    w.add_layer_norm_rms_eps(float(cfg.norm_eps))
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_vocab_size(cfg.vocab_size)
    if cfg.head_dim * cfg.n_heads != cfg.hidden_size:
        w.add_key_length(cfg.head_dim)
        w.add_value_length(cfg.head_dim)
    if cfg.rope_scaling:
        import gguf

        if cfg.rope_scaling.get("rope_type") != "linear":
            raise ValueError(f"GGUF export does not support rope_scaling {cfg.rope_scaling.get('rope_type')!r}")
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(cfg.rope_scaling["factor"]))


def _tokenizer(w: Any, llm: Any) -> None:
    tk = llm.tokenizer
    hf = tk.tok
    spec = json.loads(hf.to_str())
    if spec.get("model", {}).get("type") != "BPE":
        raise ValueError("GGUF export supports byte-level BPE tokenizers only")
    vocab = hf.get_vocab(with_added_tokens=True)
    n = max(llm.config.vocab_size, max(vocab.values()) + 1)
    tokens = [f"[PAD{i}]" for i in range(n)]
    types = [TOKEN_UNUSED] * n
    for t, i in vocab.items():
        tokens[i], types[i] = t, TOKEN_NORMAL
    for i in hf.get_added_tokens_decoder():
        types[i] = TOKEN_CONTROL
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]
    pre = json.dumps(spec.get("pre_tokenizer") or {})
    digits = '"individual_digits": true' in pre.replace("\":true", "\": true")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm" if digits else "gpt2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    if tk.bos_token_id is not None:
        w.add_bos_token_id(int(tk.bos_token_id))
    if tk.eos_token_ids:
        w.add_eos_token_id(int(tk.eos_token_ids[0]))
    w.add_add_bos_token(bool(tk.add_bos))
    if tk.chat_template:
        w.add_chat_template(tk.chat_template)


def write_gguf(llm: Any, out: Path, dtype: str = "f32") -> None:
    """Write `llm` (an llmspeed.LLM, possibly compressed) as one GGUF file at `out`."""
    import gguf
    from gguf.quants import quantize

    cfg: ModelConfig = llm.config
    arch = _gguf_arch(cfg)
    sd, int8 = dense_state_dict(llm.model)
    qt = gguf.GGMLQuantizationType
    w = gguf.GGUFWriter(str(out), arch)
    _metadata(w, cfg, arch)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
    _tokenizer(w, llm)
    n_q8 = 0
    for name, t in sd.items():
        gname = gguf_name(name)
        if arch == "llama" and (".attn_q." in gname or ".attn_k." in gname):
            t = permute_qk(t, cfg.n_heads if ".attn_q." in gname else cfg.n_kv_heads)
        arr = t.detach().float().contiguous().numpy()
        if name.rsplit(".", 1)[0] in int8 and arr.ndim == 2 and arr.shape[1] % Q8_BLOCK == 0:
            w.add_tensor(gname, quantize(arr, qt.Q8_0), raw_dtype=qt.Q8_0)
            n_q8 += 1
        elif dtype == "f16" and arr.ndim == 2:
            w.add_tensor(gname, arr.astype(np.float16))
        else:
            w.add_tensor(gname, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    log.info("gguf export: %d tensors (%d Q8_0) -> %s", len(sd), n_q8, out)
