"""`a8`: decode kernels on int8 activations (W4A8 / W8A8, llama.cpp's Q8 trick) for the quantized linears.

Changes no weights and no module: the token is a saved, visible numerics choice that the runtime applies
(`RuntimeOptions.act_q8` -> each int4/int8 layer's ExecPlan). Decode rows then round each activation row to
int8 per group of 32 (dx = max|x| / 127) and use integer dot products (llmspeed/kernels). The reference
computation of such a recipe (runtime/plans.reference_paths) applies the same rounding in plain torch, so the
fast-path agreement compares like with like.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from llmspeed.compress.api import StepReport, register_step
from llmspeed.layers.quant.plan import PhaseAware


@dataclass(frozen=True)
class Act8Config:
    """No parameters: int8 per group of 32 columns, symmetric, dx = max|x| / 127."""


@register_step(r"a8", form="a8", config=lambda: Act8Config())
def act8_step(model: nn.Module, cfg: Act8Config, calib: object | None) -> StepReport:
    """int8 activations (per 32 columns) for the decode kernels of the int4/int8 linears (applied at run time)."""
    rep = StepReport(step="a8")
    rep.changed = [name for name, mod in model.named_modules() if isinstance(mod, PhaseAware) and mod.supports_act_q8]
    if not rep.changed:
        rep.notes.append("no int4/int8 linears yet: put a8 after the quantization steps")
    return rep
