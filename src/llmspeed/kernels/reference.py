"""Pure-torch reference (and fallback) for llmspeed's CPU kernels: the layouts and the math they must match.

Layouts (shared by the C++ kernels in csrc/, the quantized linears and the saved files):
- int4: `codes` uint8 [N, K/2]; byte j of row n holds column 2j in its low nibble and 2j+1 in its high nibble
  (u in [0, 15]); `scales` and `mins` float16 [N, K/group]; w[n, k] = u[n, k] * scales[n, k//g] + mins[n, k//g]
  (GGUF Q4_1's own form `d * q + m`, so its blocks import bit-for-bit).
- int8: `q` int8 [N, K], `scales` float32 [N]; w[n, k] = q[n, k] * scales[n].
- int8 in groups of 32 (int8g): `q` int8 [N, K], `scales` float16 [N, K/32]; w[n, k] = q[n, k] * scales[n, k//32]
  (GGUF Q8_0's own form `d * q`; the product is exact in float32: 8-bit codes times an 11-bit mantissa).
Activations and outputs are float32; accumulation is float32.
"""

from __future__ import annotations

import torch


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """[N, K] integer codes in [0, 15] (K even) -> [N, K/2] uint8, low nibble = even column."""
    c = codes.to(torch.uint8)
    return (c[:, 0::2] | (c[:, 1::2] << 4)).contiguous()


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """[N, K/2] uint8 -> [N, K] uint8 codes in [0, 15] (inverse of `pack_nibbles`)."""
    lo, hi = packed & 0xF, packed >> 4  # [N, K/2] each
    return torch.stack([lo, hi], dim=-1).reshape(packed.shape[0], -1)


def int4_dequantize(codes: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, group: int,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """-> [N, K] `dtype`: u * scale + min, computed in float32 and rounded once to `dtype`."""
    u = unpack_nibbles(codes).float()  # [N, K]
    s = scales.float().repeat_interleave(group, dim=1)  # [N, K]
    m = mins.float().repeat_interleave(group, dim=1)
    return (u * s + m).to(dtype)


def int4_linear(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor,
                group: int) -> torch.Tensor:
    """x [M, K] float32 -> [M, N] float32 = x @ W^T with W dequantized in float32."""
    return x.float() @ int4_dequantize(codes, scales, mins, group).t()


def int8_linear(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x [M, K] float32 -> [M, N] float32 = (x @ q^T) * scales."""
    return (x.float() @ q.float().t()) * scales.float()


INT8G_GROUP = 32  # columns per int8g scale (GGUF Q8_0's block)


def int8g_dequantize(q: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """q [N, K] int8, scales [N, K/32] float16 -> [N, K] `dtype`: q * d computed in float32 (exact), rounded once."""
    n, k = q.shape
    w = q.reshape(n, -1, INT8G_GROUP).float() * scales.float()[..., None]  # [N, K/32, 32]
    return w.reshape(n, k).to(dtype)


def int8g_linear(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x [M, K] float32 -> [M, N] float32 = x @ W^T with W = q * d dequantized in float32."""
    return x.float() @ int8g_dequantize(q, scales).t()


def quantize_q8(x: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [M, K] float32 -> (q [M, K/g, g] float32 integers in [-127, 127], dx [M, K/g], xsum [M, K/g]).

    Per (row, group): dx = max|x| / 127, q = round-half-even(x * (1 / dx)) (0 when dx == 0), so |x - q dx| <= dx / 2;
    xsum = dx * sum(q), the sum of the ROUNDED x: the min term then cancels the offset of u * scale exactly, so
    int4_linear_q8 computes sum_k x_hat_k w_k and its error is sum_k (x_hat_k - x_k) w_k. (With the exact float
    sum the error would be sum_k (x_hat_k - x_k) u_k scale, amplified by the codes' offset: ~10x larger on
    symmetric weights.) Same float ops as the C++.
    """
    xg = x.float().reshape(x.shape[0], -1, group)  # [M, G, g]
    d = xg.abs().amax(dim=-1) / 127.0  # [M, G]
    inv = torch.where(d > 0, torch.ones_like(d) / d, torch.zeros_like(d))
    q = torch.round(xg * inv[..., None]).clamp_(-127.0, 127.0)  # [M, G, g]
    return q, d, d * q.sum(dim=-1)  # exact integer sums (|.| <= 127 g < 2^24), one rounding


def int4_linear_q8(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor,
                   group: int) -> torch.Tensor:
    """x [M, K] float32 -> [M, N] float32 with x rounded to int8 per (row, group) (see `quantize_q8`):
    y[m, n] = sum_g scale[n, g] dx[m, g] (sum_{k in g} q[m, k] u[n, k]) + min[n, g] xsum[m, g].
    """
    q, d, xsum = quantize_q8(x, group)  # [M, G, g], [M, G], [M, G]
    n = codes.shape[0]
    u = unpack_nibbles(codes).float().reshape(n, -1, group)  # [N, G, g]
    isum = torch.einsum("mgk,ngk->mng", q, u)  # [M, N, G], exact integers (|.| <= 127 * 15 * g < 2^24)
    return torch.einsum("mng,ng->mn", isum * d[:, None, :], scales.float()) + xsum @ mins.float().t()


def int8_linear_q8(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x [M, K] float32 -> [M, N] float32: int8_linear with x rounded to int8 per (row, 32-column block) as in
    `quantize_q8` (x zero-padded to a multiple of 32 columns): y = scales[n] sum_b dx[m, b] (sum_{k in b} q_x w)."""
    k = x.shape[1]
    k32 = -(-k // 32) * 32
    xq, d, _ = quantize_q8(torch.nn.functional.pad(x.float(), (0, k32 - k)), 32)  # [M, G, 32], [M, G]
    w = torch.nn.functional.pad(q.float(), (0, k32 - k)).reshape(q.shape[0], -1, 32)  # [N, G, 32]
    isum = torch.einsum("mgk,ngk->mng", xq, w)  # [M, N, G], exact integers
    return (isum * d[:, None, :]).sum(-1) * scales.float()


def paged_decode_attention_ref(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slots: torch.Tensor,
                               n_valid: torch.Tensor, scale: float) -> torch.Tensor:
    """Decode attention over a paged, head-major KV cache (gather + masked softmax + matmul).

    q [B, H, D] float32 (one new token per row); k_cache, v_cache [Hkv, NSLOTS, D]; slots [B, S] int64 (flat cache
    slot of key j of row b); n_valid [B] int64 (row b attends to keys j < n_valid[b]; slots beyond are ignored);
    H % Hkv == 0 and query head h uses kv head h // (H // Hkv). -> [B, H, D] float32.
    """
    b, h, d = q.shape
    hkv, s = k_cache.shape[0], slots.shape[1]
    mask = torch.arange(s, device=slots.device)[None, :] < n_valid[:, None]  # [B, S]
    idx = torch.where(mask, slots, torch.zeros_like(slots)).reshape(-1)  # [B*S], padding -> slot 0
    k = k_cache.float().index_select(1, idx).view(hkv, b, s, d).transpose(0, 1)  # [B, Hkv, S, D]
    v = v_cache.float().index_select(1, idx).view(hkv, b, s, d).transpose(0, 1)
    qg = q.float().reshape(b, hkv, h // hkv, d)  # [B, Hkv, G, D]
    scores = (qg @ k.transpose(-1, -2)) * scale  # [B, Hkv, G, S]
    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    return (torch.softmax(scores, dim=-1) @ v).reshape(b, h, d)
