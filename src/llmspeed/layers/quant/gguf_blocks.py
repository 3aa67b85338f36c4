"""GGUF Q4_1 / Q4_0 blocks as llmspeed's int4 format (layers/quant/int4.py) and Q8_0 blocks as its int8-in-groups
format (layers/quant/int8g.py): the exact block mappings.

Block formats (ggml, 32 weights per block, rows = output features, blocks run along the input dim K):
- Q4_1: fp16 d, fp16 m, 16 bytes of nibbles; w = d * q + m, q in 0..15.
- Q4_0: fp16 d, 16 bytes of nibbles; w = d * (q - 8).
- Q8_0: fp16 d, 32 int8 q (in column order); w = d * q.
Nibble order: byte j of a block holds element j in its low nibble and element j + 16 in its high nibble.
Both import EXACTLY into w = u * scale + min with float16 scale and min: scale = d, min = m (Q4_1) or -8 d
(Q4_0, exact: a power-of-two multiple), codes bit for bit. Q8_0 imports as its int8 codes and fp16 d as stored.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from llmspeed.layers.quant.formats import Int4Groups

GROUP = 32  # ggml's block size for Q4_0 / Q4_1 / Q8_0


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


def groups_from_blocks(data: np.ndarray, n: int, k: int, kind: str,
                      unpermute: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Int4Groups:
    """GGUF Q4 blocks of one [N, K] weight -> Int4Groups (codes exact; rows reordered by `unpermute` if given)."""
    codes, d, m = q4_blocks(data, n, k, kind)
    if unpermute is not None:  # whole rows move: codes with their own group scales
        codes, d, m = (unpermute(t) for t in (codes, d, m))
    return Int4Groups(codes.contiguous(), d.contiguous(), m.contiguous(), GROUP)


Q8_0_BYTES = 2 + GROUP  # fp16 d, then 32 int8 codes


def q8_0_blocks(data: np.ndarray, n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw Q8_0 bytes [N, K/32 * 34] -> (q [N, K] int8, d [N, K/32] float16), bit for bit: w = q * d."""
    if k % GROUP:
        raise ValueError(f"Q8_0 needs K % {GROUP} == 0, got K = {k}")
    blocks = np.ascontiguousarray(data, dtype=np.uint8).reshape(n, k // GROUP, Q8_0_BYTES)  # [N, G, 34]
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0]  # [N, G]
    q = blocks[..., 2:].copy().view(np.int8).reshape(n, k)  # [N, G, 32] -> [N, K]
    return torch.from_numpy(q), torch.from_numpy(np.ascontiguousarray(d))
