"""`int8-head` / `int8-head-g32`: int8 vocabulary projection (lm_head) and, when tied, the embedding table sharing
its codes (layers/quant/embedding.py).

`int8-head`: one float32 scale per vocabulary row (`Int8Linear`). `int8-head-g32`: one float16 scale per 32
columns (`Int8GroupLinear`, GGUF Q8_0's form: finer scales, and a GGUF Q8_0 table imports into it exactly).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from llmspeed.compress.api import StepReport, register_step, set_module
from llmspeed.layers.quant.embedding import Int8Embedding, Int8GroupEmbedding
from llmspeed.layers.quant.int8 import Int8Linear
from llmspeed.layers.quant.int8g import GROUP, Int8GroupLinear

GROUPS = (GROUP,)


@dataclass(frozen=True)
class Int8HeadConfig:
    group: int | None = None  # None: one scale per vocabulary row; 32: one per 32 columns

    def __post_init__(self) -> None:
        if self.group is not None and self.group not in GROUPS:
            raise ValueError(f"int8-head group must be one of {GROUPS}, got {self.group}")

    @classmethod
    def from_token(cls, group: str | None) -> Int8HeadConfig:
        return cls(int(group) if group is not None else None)

    @property
    def token(self) -> str:
        return "int8-head" if self.group is None else f"int8-head-g{self.group}"

    def head(self, lin: nn.Linear, meta: bool = False) -> nn.Module:
        """The quantized head for `lin` (shape only, on the meta device, when `meta`)."""
        cls = Int8Linear if self.group is None else Int8GroupLinear
        if meta:
            return cls(lin.in_features, lin.out_features, lin.bias is not None, device="meta")
        return cls.from_dense(lin)

    def embedding(self, model: nn.Module) -> nn.Module:
        return Int8Embedding(model) if self.group is None else Int8GroupEmbedding(model)


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


def _swap(model: nn.Module, head: nn.Module, cfg: Int8HeadConfig) -> list[str]:
    emb = _tied_embedding(model)
    model.lm_head = head  # type: ignore[assignment]
    changed = ["lm_head"]
    if emb is not None:
        set_module(model, emb, cfg.embedding(model))
        changed.append(emb)
    return changed


def restore_int8_head(model: nn.Module, cfg: Int8HeadConfig) -> None:
    head = model.lm_head  # type: ignore[union-attr]
    if not isinstance(head, nn.Linear):
        raise ValueError(f"{cfg.token}: the model's lm_head is not a Linear")
    _swap(model, cfg.head(head, meta=True), cfg)


@register_step(r"int8-head(?:-g(?P<group>\d+))?", form="int8-head[-g32]", config=Int8HeadConfig.from_token,
               restore=restore_int8_head)
def int8_head_step(model: nn.Module, cfg: Int8HeadConfig, calib: object | None) -> StepReport:
    """int8 lm_head (per vocabulary row, or per 32 columns with -g32) and the tied embedding on the same codes."""
    rep = StepReport(step=cfg.token)
    head = getattr(model, "lm_head", None)
    if type(head) is not nn.Linear:
        rep.skipped["lm_head"] = f"not a float nn.Linear ({type(head).__name__})"
        return rep
    if cfg.group is not None and head.in_features % cfg.group:
        raise ValueError(f"{cfg.token}: group size {cfg.group} does not divide the head's K = {head.in_features}")
    rep.changed = _swap(model, cfg.head(head), cfg)
    if len(rep.changed) == 1:
        rep.notes.append("embedding not tied to lm_head: it stays float32")
    return rep
