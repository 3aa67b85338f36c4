"""`int8-dyn`: int8 weights + per-token dynamic int8 activations through fbgemm (layers/quant/int8_dyn.py)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from llmspeed.compress.api import StepReport, register_step
from llmspeed.compress.quant.swap import restore_linears, swap_linears
from llmspeed.layers.quant.int8_dyn import Int8DynLinear


@dataclass(frozen=True)
class Int8DynConfig:
    skip: tuple[str, ...] = ("lm_head",)

    def __post_init__(self) -> None:
        if not isinstance(self.skip, tuple):
            raise ValueError("skip must be a tuple of module names")


def restore_int8_dyn(model: nn.Module, cfg: Int8DynConfig) -> None:
    restore_linears(model, cfg.skip, lambda lin: Int8DynLinear(lin.in_features, lin.out_features,
                                                               lin.bias is not None, device="meta"))


@register_step(r"int8-dyn", form="int8-dyn", config=lambda: Int8DynConfig(), restore=restore_int8_dyn)
def int8_dyn_step(model: nn.Module, cfg: Int8DynConfig, calib: object | None) -> StepReport:
    """int8 weights and dynamically quantized int8 activations (fbgemm)."""
    return swap_linears(model, "int8-dyn", cfg.skip, Int8DynLinear.from_dense)
