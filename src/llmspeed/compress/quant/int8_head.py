"""`int8-head`: int8 vocabulary projection (lm_head) and, when tied, the embedding table sharing its codes
(layers/quant/embedding.py)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from llmspeed.compress.api import StepReport, register_step, set_module
from llmspeed.layers.quant.embedding import Int8Embedding
from llmspeed.layers.quant.int8 import Int8Linear


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
