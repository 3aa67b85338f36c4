"""Embedding lookup on a tied quantized head: the vocabulary table held once, as the head's int8 codes + scales.

On SmolLM2-135M the tied 49152 x 576 table is a fifth of the weights and the single largest read of every decode
step. Quantized, the same int8 codes serve both uses: lm_head is an `Int8Linear` (one scale per vocabulary row) or
an `Int8GroupLinear` (one float16 scale per 32 columns, GGUF Q8_0's form); the embedding gathers rows of the head's
codes and scales them. The embedding owns no tensors (the head does), so the saved file holds the table once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmspeed.layers.quant.int8 import Int8Linear
from llmspeed.layers.quant.int8g import GROUP, Int8GroupLinear


class _TiedHeadEmbedding(nn.Module):
    """Reads the model's `lm_head` (not registered as a submodule: no cycle, no duplicate tensors)."""

    weight = None  # the loader re-ties `lm_head.weight = embed.weight`; None keeps that a no-op

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._root = [model]  # a list, so the model is not registered as a submodule


class Int8Embedding(_TiedHeadEmbedding):
    """Embedding lookup on a tied `Int8Linear` head: row r = codes[r] * scales[r]."""

    @property
    def head(self) -> Int8Linear:
        return self._root[0].lm_head  # type: ignore[return-value]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # [B, T] -> [B, T, C] float32
        h = self.head
        rows = F.embedding(ids, h.weight_int8).float()  # [B, T, C]
        return rows * h.scales[ids].unsqueeze(-1)


class Int8GroupEmbedding(_TiedHeadEmbedding):
    """Embedding lookup on a tied `Int8GroupLinear` head: row r = codes[r] * its 32-column scales (exact in float32,
    so a GGUF Q8_0 table gives gguf's own dequantized rows)."""

    @property
    def head(self) -> Int8GroupLinear:
        return self._root[0].lm_head  # type: ignore[return-value]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # [B, T] -> [B, T, C] float32
        h = self.head
        rows = F.embedding(ids, h.weight_int8).float()  # [B, T, C]
        d = h.weight_scales[ids].float()  # [B, T, C/32]
        return (rows.unflatten(-1, (-1, GROUP)) * d.unsqueeze(-1)).flatten(-2)  # [B, T, C]
