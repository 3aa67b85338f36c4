"""GGUF Q4_1 / Q4_0 blocks straight into llmspeed's int4-g32-asym modules (no float32 detour, no second rounding).

Block formats (ggml, 32 weights per block, rows = output features, blocks run along the input dim K):
- Q4_1: fp16 d, fp16 m, 16 bytes of nibbles; w = d * q + m, q in 0..15.
- Q4_0: fp16 d, 16 bytes of nibbles; w = d * (q - 8).
Nibble order: byte j of a block holds element j in its low nibble and element j + 16 in its high nibble.

The int4 CPU kernel dequantizes w = (q - 8) * scale + zero with the same unsigned code q, so
    Q4_1: scale = d, zero = m + 8 d        Q4_0: scale = d, zero = 0
reproduces the block exactly up to the kernel's bf16 scales_and_zeros. Rounding d and z = m + 8d to bf16
(8 significant bits, unit roundoff u = 2^-8) bounds the per-weight error by
    |q - 8| * |d - bf16(d)| + |z - bf16(z)| <= 2^-8 * (8 |d| + |m + 8 d|)        (per block)
(`weight_error_bound`); `kernel_params` picks, per block, the pair of bf16 neighbours of (d, z) that minimises
the max error over the block's codes, which is never worse than that bound.
The codes themselves are kept bit for bit. llama.cpp's Q/K row permutation is undone
by permuting whole rows of codes together with their per-row group scales (exact).

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

from llmspeed.compress.quant.common import Int4Groups, pack_int4, quantize_int4_groups, scales_and_zeros
from llmspeed.models.config import ModelConfig
from llmspeed.models.gguf_file import _LAYER_MAP, _TOP_MAP, field, unpermute_qk

log = logging.getLogger(__name__)
GROUP = 32  # ggml's block size for Q4_0 / Q4_1 / Q8_0
NATIVE_RECIPE = ["int4-g32-asym"]  # what the imported modules are (restore_structure rebuilds them)
_BF16_U = 2.0**-8  # bf16 unit roundoff (8 significant bits): |x - bf16(x)| <= 2^-8 |x|


def q4_blocks(data: np.ndarray, n: int, k: int, kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw Q4_0/Q4_1 bytes [N, K/32 * block_bytes] -> (codes [N, K] int32 0..15, d [N, K/32], m [N, K/32] float32).

    For Q4_0, m = -8 d (so d * q + m = d * (q - 8) holds for both kinds).
    """
    head = 4 if kind == "Q4_1" else 2
    blocks = np.ascontiguousarray(data, dtype=np.uint8).reshape(n, k // GROUP, head + 16)  # [N, G, bytes]
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)  # [N, G]
    if kind == "Q4_1":
        m = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    else:
        m = -8.0 * d
    qs = blocks[..., head:]  # [N, G, 16]
    codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).reshape(n, k)  # [N, G, 32] -> [N, K]
    return torch.from_numpy(codes.astype(np.int32)), torch.from_numpy(d), torch.from_numpy(m)


def _bf16_neighbours(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The bf16 values just below and just above float32 `x` (equal when x is representable), as float32."""
    y = x.to(torch.bfloat16)
    yf = y.float()
    lo = torch.where(yf > x, torch.nextafter(y, torch.full_like(y, -float("inf"))), y).float()
    hi = torch.where(yf < x, torch.nextafter(y, torch.full_like(y, float("inf"))), y).float()
    return lo, hi


def kernel_params(codes: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bf16-representable (scale, zero) [N, G] (as float32) for codes [N, K] with (q - 8) s + z ~ d q + m.

    Exact target: s = d, z = m + 8 d. On the bf16 grid the error at code q is (q - 8) ds + dz, linear in q, so
    its maximum over the block's code range [qmin, qmax] sits at an end. Among s in {bf16 below d, bf16 above d}
    and z in {nearest bf16 to z0, the two bf16 neighbours of z0 - ((qmin + qmax) / 2 - 8) ds} (which centres the
    error), take the pair with the smallest max error: never worse than rounding d and z0 to nearest.
    """
    N, G = d.shape
    cg = codes.reshape(N, G, -1)
    qmin, qmax = cg.amin(-1).float() - 8.0, cg.amax(-1).float() - 8.0  # [N, G], shifted codes at the ends
    z0 = m + 8.0 * d  # exact in float32 for fp16 d, m of similar magnitude
    best_err = torch.full_like(d, float("inf"))
    best_s, best_z = d.clone(), z0.clone()
    for s in _bf16_neighbours(d):
        ds = s - d
        zc = z0 - 0.5 * (qmin + qmax) * ds
        for z in (*_bf16_neighbours(zc), z0.to(torch.bfloat16).float()):
            dz = z - z0
            err = torch.maximum((qmin * ds + dz).abs(), (qmax * ds + dz).abs())
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_s, best_z = torch.where(better, s, best_s), torch.where(better, z, best_z)
    return best_s, best_z


def weight_error_bound(d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Per-block [N, G] bound on |kernel weight - (d q + m)|: bf16 round-to-nearest of d and m + 8 d (u = 2^-8)."""
    return _BF16_U * (8.0 * d.abs() + (m + 8.0 * d).abs())


def groups_from_blocks(data: np.ndarray, n: int, k: int, kind: str, n_perm_heads: int | None = None) -> Int4Groups:
    """GGUF Q4 blocks of one [N, K] weight -> Int4Groups (codes exact; Q/K rows un-permuted when n_perm_heads)."""
    codes, d, m = q4_blocks(data, n, k, kind)
    scale, zero = kernel_params(codes, d, m)
    if n_perm_heads:  # whole rows move: codes with their own group scales
        codes, scale, zero = (unpermute_qk(t, n_perm_heads) for t in (codes, scale, zero))
    return Int4Groups(codes.contiguous(), scale.contiguous(), zero.contiguous(), GROUP)


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
        if n % 16:  # same rule as the int4 step: the kernel needs N % 16 == 0, the layer stays float32
            w = _dense(t)
            sd[key] = (unpermute_qk(w, perm) if perm else w).contiguous()
            continue
        if k % GROUP:
            raise ValueError(f"gguf native: {name} has K = {k}, not a multiple of {GROUP}")
        if kind in ("Q4_0", "Q4_1"):
            g = groups_from_blocks(t.data, n, k, kind, perm)
        else:
            w = _dense(t)
            g = quantize_int4_groups(unpermute_qk(w, perm) if perm else w, GROUP, symmetric=False)
            requantized.append(f"{name} ({kind})")
        base = key.removesuffix(".weight")
        sd[f"{base}.weight_int4"] = pack_int4(g.codes)  # [N, K/2] uint8, kernel layout
        sd[f"{base}.scales_and_zeros"] = scales_and_zeros(g.scales, g.zeros)  # [K/32, N, 2] bf16
    if requantized:
        log.warning("gguf native: %d Linear weights were not Q4_0/Q4_1 and were re-quantized to int4-g32-asym: %s",
                    len(requantized), ", ".join(requantized[:4]))
    return sd
