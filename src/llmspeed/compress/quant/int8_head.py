"""`int8-head`: int8 vocabulary projection (lm_head) and, when tied, the embedding table sharing its codes.

On SmolLM2-135M the tied 49152 x 576 table is a fifth of the weights and the single largest read of every
decode step. Quantized per vocabulary row, the same int8 codes + per-row scales serve both uses: lm_head is
an `Int8Linear`; the embedding becomes an `Int8Embedding` that gathers rows of the head's codes and scales
them. The embedding owns no tensors (the head does), so the saved file holds the table once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llmspeed.compress.api import StepReport, register_step, set_module
from llmspeed.compress.quant.int8 import Int8Linear


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


@dataclass(frozen=True)
class Int8HeadConfig:
    def __post_init__(self) -> None:
        pass


def _tied_embedding(model: nn.Module) -> str | None:
    """Dotted name of the nn.Embedding whose weight is the lm_head's (tied), if any."""
    head = getattr(model, "lm_head", None)
    w = getattr(head, "weight", None)
    if w is None:
        return None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Embedding) and mod.weight is w:
            return name
    return None


def _swap(model: nn.Module, head: nn.Module) -> list[str]:
    emb = _tied_embedding(model)
    model.lm_head = head  # type: ignore[assignment]
    changed = ["lm_head"]
    if emb is not None:
        set_module(model, emb, Int8Embedding(model))
        changed.append(emb)
    return changed


def restore_int8_head(model: nn.Module, cfg: Int8HeadConfig) -> None:
    head = model.lm_head  # type: ignore[union-attr]
    if not isinstance(head, nn.Linear):
        raise ValueError("int8-head: the model's lm_head is not a Linear")
    _swap(model, Int8Linear(head.in_features, head.out_features, head.bias is not None, device="meta"))


@register_step(r"int8-head", form="int8-head", config=lambda: Int8HeadConfig(), restore=restore_int8_head)
def int8_head_step(model: nn.Module, cfg: Int8HeadConfig, calib: object | None) -> StepReport:
    """int8 lm_head (per vocabulary row) and the tied embedding on the same codes."""
    rep = StepReport(step="int8-head")
    head = getattr(model, "lm_head", None)
    if type(head) is not nn.Linear:
        rep.skipped["lm_head"] = f"not a float nn.Linear ({type(head).__name__})"
        return rep
    rep.changed = _swap(model, Int8Linear.from_dense(head))
    if len(rep.changed) == 1:
        rep.notes.append("embedding not tied to lm_head: it stays float32")
    return rep
