"""`bf16` / `fp16`: Linear weights stored in half precision (layers/quant/half.py); norms, softmax, logits float32."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from llmspeed.compress.api import StepReport, register_step
from llmspeed.compress.quant.swap import restore_linears, swap_linears
from llmspeed.layers.quant.half import SMALL_M, HalfLinear
from llmspeed.util.cpu import fast_half_matmul

HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class HalfConfig:
    dtype: str = "bf16"
    skip: tuple[str, ...] = ("lm_head",)

    def __post_init__(self) -> None:
        if self.dtype not in HALF:
            raise ValueError(f"dtype must be one of {', '.join(HALF)}, got {self.dtype!r}")


def restore_half(model: nn.Module, cfg: HalfConfig) -> None:
    restore_linears(model, cfg.skip, lambda lin: HalfLinear(lin.in_features, lin.out_features, HALF[cfg.dtype],
                                                            lin.bias is not None, device="meta"))


@register_step(r"(?P<dtype>bf16|fp16)", form="bf16|fp16", config=lambda dtype: HalfConfig(dtype),
               restore=restore_half, devices=("cpu", "cuda"))
def half_step(model: nn.Module, cfg: HalfConfig, calib: object | None) -> StepReport:
    """Mixed precision: half-precision Linear weights, float32 norms/softmax/logits."""
    rep = swap_linears(model, cfg.dtype, cfg.skip, lambda lin: HalfLinear.from_dense(lin, HALF[cfg.dtype]))
    if not fast_half_matmul(cfg.dtype):
        rep.notes.append(f"no native {cfg.dtype} matmul on this CPU: calls with > {SMALL_M} rows upcast to fp32")
    return rep
