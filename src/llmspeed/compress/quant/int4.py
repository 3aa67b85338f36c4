"""`int4-g{32,64,128}[-asym|-sym]`: group-wise 4-bit weights (layers/quant/int4.py) by round to nearest.

The grid: asymmetric (each group's min and max on the grid, zero points, torchao's int4 weight-only default) unless
`-sym` asks for the symmetric one. `int4-g32` without a suffix meant symmetric before issue 22 and means
asymmetric now; a saved recipe records the explicit grid (`Int4Config.token`), and both grids have the same module
structure, so directories saved either way load unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from llmspeed.compress.api import StepReport, iter_linears, register_step
from llmspeed.compress.quant.swap import restore_linears, swap_linears
from llmspeed.layers.quant.formats import INT4_GROUPS
from llmspeed.layers.quant.int4 import Int4Linear

GRID_PATTERN = r"(?P<grid>-asym|-sym)?"


@dataclass(frozen=True)
class Int4Config:
    group_size: int = 32
    symmetric: bool = False
    skip: tuple[str, ...] = ("lm_head",)

    def __post_init__(self) -> None:
        if self.group_size not in INT4_GROUPS:
            raise ValueError(f"group_size must be 32, 64 or 128, got {self.group_size}")

    @classmethod
    def from_token(cls, group: str, grid: str | None) -> Int4Config:
        return cls(int(group), symmetric=grid == "-sym")

    @property
    def token(self) -> str:  # the explicit form a saved recipe records
        return f"int4-g{self.group_size}-{'sym' if self.symmetric else 'asym'}"


def fitting_groups(model: nn.Module, skip: tuple[str, ...] = ("lm_head",)) -> tuple[int, ...]:
    """The int4 group sizes that divide every quantized layer's K (SmolLM2-135M: 32 and 64, since K = 576)."""
    ks = [m.in_features for _, m in iter_linears(model, skip=skip)]
    return tuple(g for g in INT4_GROUPS if all(k % g == 0 for k in ks))


def check_groups(model: nn.Module, group: int, skip: tuple[str, ...], step: str) -> None:
    """A group size that does not divide some layer's K is a user error naming the layers and what fits."""
    ks = [(n, m.in_features) for n, m in iter_linears(model, skip=skip)]
    bad = [(n, k) for n, k in ks if k % group]
    if bad:
        fits = fitting_groups(model, skip)
        names = ", ".join(n for n, _ in bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
        raise ValueError(f"{step}: group size {group} does not divide K = {', '.join(map(str, sorted({k for _, k in bad})))}"
                         f" of layers {names}; group sizes that fit this model: {', '.join(map(str, fits)) or 'none'}")


def restore_int4(model: nn.Module, cfg: Int4Config) -> None:
    restore_linears(model, cfg.skip, lambda lin: Int4Linear(lin.in_features, lin.out_features, cfg.group_size,
                                                            lin.bias is not None, device="meta"))


@register_step(r"int4-g(?P<group>\d+)" + GRID_PATTERN, form="int4-g{32,64,128}[-asym|-sym]",
               config=Int4Config.from_token, restore=restore_int4)
def int4_step(model: nn.Module, cfg: Int4Config, calib: object | None) -> StepReport:
    """Group-wise int4 weights, round to nearest (asymmetric with zero points, or -sym)."""
    check_groups(model, cfg.group_size, cfg.skip, cfg.token)
    return swap_linears(model, cfg.token, cfg.skip,
                        lambda lin: Int4Linear.from_dense(lin, cfg.group_size, cfg.symmetric))
