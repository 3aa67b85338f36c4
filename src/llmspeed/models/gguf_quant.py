"""GGUF Q4_1 / Q4_0 blocks straight into llmspeed's int4-g32-asym modules (no float32 detour, no second rounding).

The block mapping itself is layers/quant/gguf_blocks.py; this file walks a GGUF file's tensors.
llmspeed's int4 kernel dequantizes w = u * scale + min with float16 scale and min (llmspeed/kernels), the
blocks' own form and precision, so both kinds import EXACTLY: scale = d, min = m (Q4_1) or -8 d (Q4_0, exact:
a power-of-two multiple), codes bit for bit. The kernel's weights equal gguf's dequantized float32 values;
the only difference from the float32 model is the kernel's summation order. llama.cpp's Q/K row permutation
is undone by permuting whole rows of codes together with their per-row group scales (exact).

The tied `token_embd` (Q8_0: one fp16 scale per 32 weights) stays a dense float32 embedding: `int8-head` /
`Int8Linear` hold one scale per vocabulary row (torch's int8 kernel takes per-channel scales only), so the
18 block scales of a 576-wide row cannot be represented without re-rounding the codes. d * q is exact in
float32, so the dense table equals the GGUF's values exactly.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from llmspeed.kernels import pack_nibbles
from llmspeed.layers.quant.formats import PARAM_DTYPE, quantize_int4_groups
from llmspeed.layers.quant.gguf_blocks import GROUP, groups_from_blocks
from llmspeed.models.config import ModelConfig
from llmspeed.models.gguf_file import _LAYER_MAP, _TOP_MAP, field, unpermute_qk

log = logging.getLogger(__name__)
NATIVE_RECIPE = ["int4-g32-asym"]  # what the imported modules are (restore_structure rebuilds them)


def _dense(t: Any) -> torch.Tensor:
    from gguf.quants import dequantize

    arr = dequantize(t.data, t.tensor_type)  # float32 [out, in]
    return torch.from_numpy(np.array(arr, dtype=np.float32, copy=True))


def native_state_dict(reader: Any, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """State dict of the `int4-g32-asym` model built from the GGUF's blocks (Linear weights as Int4Linear buffers).

    Q4_0/Q4_1 Linear weights are imported code for code; any other Linear type (F16, Q8_0, K-quants, ...) is
    dequantized and rounded to int4-g32-asym (logged: that is a second rounding). Norms and the embedding stay
    dense float32.
    """
    arch = field(reader, "general.architecture")
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
