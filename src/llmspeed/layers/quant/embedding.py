"""Embedding lookup on a tied int8 head: the vocabulary table held once, as the head's int8 codes + row scales.

On SmolLM2-135M the tied 49152 x 576 table is a fifth of the weights and the single largest read of every decode
step. Quantized per vocabulary row, the same int8 codes + per-row scales serve both uses: lm_head is an
`Int8Linear`; the embedding gathers rows of the head's codes and scales them. The embedding owns no tensors
(the head does), so the saved file holds the table once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmspeed.layers.quant.int8 import Int8Linear


class Int8Embedding(nn.Module):
    """Embedding lookup on a tied `Int8Linear` head: row r = codes[r] * scales[r]."""

    weight = None  # the loader re-ties `lm_head.weight = embed.weight`; None keeps that a no-op

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._root = [model]  # a list, so the model is not registered as a submodule (no cycle, no duplicates)

    @property
    def head(self) -> Int8Linear:
        return self._root[0].lm_head  # type: ignore[return-value]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # [B, T] -> [B, T, C] float32
        h = self.head
        rows = F.embedding(ids, h.weight_int8).float()  # [B, T, C]
        return rows * h.scales[ids].unsqueeze(-1)
