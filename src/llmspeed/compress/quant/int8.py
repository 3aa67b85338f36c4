"""`int8`: weight-only int8, per-output-channel symmetric (layers/quant/int8.py, phase-aware)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from llmspeed.compress.api import StepReport, register_step
from llmspeed.compress.quant.swap import restore_linears, swap_linears
from llmspeed.layers.quant.int8 import Int8Linear


@dataclass(frozen=True)
class Int8Config:
    skip: tuple[str, ...] = ("lm_head",)

    def __post_init__(self) -> None:
        if not isinstance(self.skip, tuple):
            raise ValueError("skip must be a tuple of module names")


def restore_int8(model: nn.Module, cfg: Int8Config) -> None:
    restore_linears(model, cfg.skip, lambda lin: Int8Linear(lin.in_features, lin.out_features, lin.bias is not None,
                                                            device="meta"))


@register_step(r"int8", form="int8", config=lambda: Int8Config(), restore=restore_int8)
def int8_step(model: nn.Module, cfg: Int8Config, calib: object | None) -> StepReport:
    """Weight-only int8, per-output-channel symmetric scales."""
    return swap_linears(model, "int8", cfg.skip, Int8Linear.from_dense)
