"""GGUF Q4_1 / Q4_0 blocks straight into llmspeed's int4-g32-asym modules (no float32 detour, no second rounding).

The block mapping itself is layers/quant/gguf_blocks.py; this file walks a GGUF file's tensors.
llmspeed's int4 kernel dequantizes w = u * scale + min with float16 scale and min (llmspeed/kernels), the
blocks' own form and precision, so both kinds import EXACTLY: scale = d, min = m (Q4_1) or -8 d (Q4_0, exact:
a power-of-two multiple), codes bit for bit. The kernel's weights equal gguf's dequantized float32 values;
the only difference from the float32 model is the kernel's summation order. llama.cpp's Q/K row permutation
is undone by permuting whole rows of codes together with their per-row group scales (exact).

A Q8_0 vocabulary table (the tied `token_embd`, or an untied `output.weight`) imports as the head's
`int8-head-g32` buffers: its int8 codes bit for bit and its fp16 block scales d as stored (`Int8GroupLinear`,
w = q * d, exact in float32), and a tied embedding gathers rows of the same codes (`Int8GroupEmbedding`). The
decode step then reads the 49152 x 576 table as int8 (28 MB + 1.8 MB of scales) instead of float32 (113 MB).
Any other head type stays dense float32 (so does an untied embedding).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from llmspeed.kernels import pack_nibbles
from llmspeed.layers.quant.formats import PARAM_DTYPE, quantize_int4_groups
from llmspeed.layers.quant.gguf_blocks import GROUP, groups_from_blocks, q8_0_blocks
from llmspeed.models.config import ModelConfig
from llmspeed.models.gguf_file import _LAYER_MAP, _TOP_MAP, field, unpermute_qk

log = logging.getLogger(__name__)
NATIVE_RECIPE = ["int4-g32-asym"]  # what the imported Linears are (restore_structure rebuilds them)
Q8_HEAD_STEP = "int8-head-g32"  # added when the vocabulary projection's table is Q8_0 (see native_recipe)


def _dense(t: Any) -> torch.Tensor:
    from gguf.quants import dequantize

    arr = dequantize(t.data, t.tensor_type)  # float32 [out, in]
    return torch.from_numpy(np.array(arr, dtype=np.float32, copy=True))


def _head_tensor(reader: Any) -> Any:
    """The GGUF tensor the vocabulary projection reads: `output.weight`, or the tied `token_embd.weight`."""
    by_name = {t.name: t for t in reader.tensors}
    return by_name.get("output.weight", by_name.get("token_embd.weight"))


def q8_head(reader: Any) -> bool:
    """Whether the vocabulary projection's table is Q8_0 (then it imports exactly as `int8-head-g32`)."""
    t = _head_tensor(reader)
    return t is not None and t.tensor_type.name == "Q8_0"


def native_recipe(reader: Any) -> list[str]:
    """The recipe `native_state_dict`'s modules are: int4 Linears, plus the Q8_0 head where the file has one."""
    return [*NATIVE_RECIPE, *([Q8_HEAD_STEP] if q8_head(reader) else [])]


def native_state_dict(reader: Any, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """State dict of the `native_recipe(reader)` model built from the GGUF's blocks (Linear weights as Int4Linear
    buffers, a Q8_0 head as Int8GroupLinear buffers).

    Q4_0/Q4_1 Linear weights are imported code for code; any other Linear type (F16, Q8_0, K-quants, ...) is
    dequantized and rounded to int4-g32-asym (logged: that is a second rounding). A Q8_0 head table is imported
    code for code (tied: it serves the embedding too). Norms, a non-Q8_0 head and an untied embedding stay dense
    float32.
    """
    arch = field(reader, "general.architecture")
    head = _head_tensor(reader) if q8_head(reader) else None
    sd: dict[str, torch.Tensor] = {}
    requantized: list[str] = []
    for t in reader.tensors:
        name, kind = t.name, t.tensor_type.name
        if name in _TOP_MAP:
            key = _TOP_MAP[name]
        elif name.startswith("blk.") and name.split(".", 2)[2] in _LAYER_MAP:
            _, idx, rest = name.split(".", 2)
            key = f"model.layers.{idx}.{_LAYER_MAP[rest]}"
        else:
            log.debug("skipping GGUF tensor %s", name)
            continue
        perm = None
        if arch in ("llama", "mistral") and (".attn_q." in name or ".attn_k." in name):
            perm = cfg.n_heads if ".attn_q." in name else cfg.n_kv_heads
        if t is head:  # Q8_0 codes and block scales as stored: the head's (and a tied embedding's) table
            q, d = q8_0_blocks(t.data, int(t.shape[1]), int(t.shape[0]))  # GGUF shape is [in, out]
            sd["lm_head.weight_int8"], sd["lm_head.weight_scales"] = q, d  # [V, C] int8, [V, C/32] float16
            continue
        is_linear = key.endswith("_proj.weight") or key == "lm_head.weight"
        if not is_linear or key == "lm_head.weight":  # norms, biases, embedding, untied head: dense float32
            w = _dense(t)
            sd[key] = (unpermute_qk(w, perm) if perm else w).contiguous()
            continue
        n, k = int(t.shape[1]), int(t.shape[0])  # GGUF shape is [in, out]
        if k % GROUP:
            raise ValueError(f"gguf native: {name} has K = {k}, not a multiple of {GROUP}")
        if kind in ("Q4_0", "Q4_1"):
            g = groups_from_blocks(t.data, n, k, kind, (lambda x, h=perm: unpermute_qk(x, h)) if perm else None)
        else:
            w = _dense(t)
            g = quantize_int4_groups(unpermute_qk(w, perm) if perm else w, GROUP, symmetric=False)
            requantized.append(f"{name} ({kind})")
        base = key.removesuffix(".weight")
        sd[f"{base}.weight_codes"] = pack_nibbles(g.codes)  # [N, K/2] uint8
        sd[f"{base}.weight_scales"] = g.scales.to(PARAM_DTYPE)  # [N, K/32] float16 (exact for GGUF blocks)
        sd[f"{base}.weight_mins"] = g.mins.to(PARAM_DTYPE)
    if requantized:
        log.warning("gguf native: %d Linear weights were not Q4_0/Q4_1 and were re-quantized to int4-g32-asym: %s",
                    len(requantized), ", ".join(requantized[:4]))
    return sd
