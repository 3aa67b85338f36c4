"""`a8`: decode kernels with int8 activations (W4A8 / W8A8, llama.cpp's Q8 trick) on the quantized linears.

Changes no weights. Every int4/int8 linear present when the step runs gets `act_q8 = True`: its decode rows
then round each activation row to int8 per group of 32 (dx = max|x| / 127) and use VNNI integer dot products
(llmspeed/kernels: ~2x the bytes/s of the exact float kernels at M = 1, and M = 8 costs ~1.45x M = 1).
This is a numerics change, so it is a recipe step (visible, saved, measured by ΔPPL/KL), not a silent
kernel choice; the reference computation of such a recipe (`evaluation/fastpath.reference_paths`) applies the
same activation rounding in plain torch, so the fast-path agreement compares like with like.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from llmspeed.compress.api import StepReport, register_step
from llmspeed.compress.quant.phase import PhaseAware


@dataclass(frozen=True)
class Act8Config:
    def __post_init__(self) -> None:
        pass


def restore_act8(model: nn.Module, cfg: Act8Config) -> None:
    for mod in model.modules():
        if isinstance(mod, PhaseAware) and hasattr(mod, "act_q8"):
            mod.act_q8 = True


@register_step(r"a8", form="a8", config=lambda: Act8Config(), restore=restore_act8)
def act8_step(model: nn.Module, cfg: Act8Config, calib: object | None) -> StepReport:
    """int8 activations (per 32 columns) for the decode kernels of the int4/int8 linears already present."""
    rep = StepReport(step="a8")
    for name, mod in model.named_modules():
        if isinstance(mod, PhaseAware) and hasattr(mod, "act_q8"):
            mod.act_q8 = True
            rep.changed.append(name)
    if not rep.changed:
        rep.notes.append("no int4/int8 linears yet: put a8 after the quantization steps")
    return rep
