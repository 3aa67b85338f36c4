"""Preallocated paged KV cache: per layer a flat [slots, Hkv, D] pool addressed through block tables."""

from __future__ import annotations

import torch


class KVCache:
    """Head-major storage so one sequence's keys are a contiguous [Hkv, S, D] slice when its blocks are."""

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, num_blocks: int, block_size: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError("KV cache needs a positive number of blocks and block size")
        self.num_blocks, self.block_size = num_blocks, block_size
        slots = (num_blocks + 1) * block_size  # one extra block: scratch slots for padding tokens
        self.k = torch.zeros(n_layers, n_kv_heads, slots, head_dim, dtype=dtype, device=device)  # [L, Hkv, slots, D]
        self.v = torch.zeros(n_layers, n_kv_heads, slots, head_dim, dtype=dtype, device=device)
        self.scratch_slot = num_blocks * block_size
        self.layers = [(self.k[i], self.v[i]) for i in range(n_layers)]  # views, built once

    @property
    def capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def slots_for(self, block_table: list[int], start: int, end: int) -> list[int]:
        """Flat slot index of positions start..end-1 of a sequence."""
        bs = self.block_size
        return [block_table[p // bs] * bs + p % bs for p in range(start, end)]
