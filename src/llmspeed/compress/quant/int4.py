"""`int4-g{32,64,128}[-asym]`: group-wise 4-bit weights on torch's CPU int4 kernel.

`aten._weight_int4pack_mm_for_cpu` wants bf16 activations to be fast (fp32 activations take a slow path,
~10x), N % 16 == 0 and K % group == 0, and [K/g, N, 2] bf16 scales-and-zeros; it dequantizes
w = (u - 8) * scale + zero. All calls use it with bf16 activations (prefill included: dequantizing to fp32
would need the kernel's slow fp32 path, as the packed layout is torch's own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from llmspeed.compress.api import StepReport, iter_linears, register_step
from llmspeed.compress.quant.common import (
    INT4_GROUPS,
    Int4Groups,
    pack_int4,
    quantize_int4_groups,
    realign_buffers,
    scales_and_zeros,
)
from llmspeed.compress.quant.swap import restore_linears, swap_linears


class Int4Linear(nn.Module):
    """Persistent buffers: `weight_int4` [N, K/2] uint8 (kernel layout), `scales_and_zeros` [K/g, N, 2] bf16."""

    def __init__(self, in_features: int, out_features: int, group: int, bias: bool = False,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        if in_features % group or out_features % 16:
            raise ValueError(f"int4 needs K % {group} == 0 and N % 16 == 0, got K={in_features}, N={out_features}")
        self.in_features, self.out_features, self.group = in_features, out_features, group
        self.register_buffer("weight_int4", torch.empty(out_features, in_features // 2, dtype=torch.uint8,
                                                        device=device))
        self.register_buffer("scales_and_zeros", torch.empty(in_features // group, out_features, 2,
                                                             dtype=torch.bfloat16, device=device))
        self.bias = nn.Parameter(torch.empty(out_features, device=device), requires_grad=False) if bias else None

    @classmethod
    def from_groups(cls, g: Int4Groups, bias: torch.Tensor | None = None) -> Int4Linear:
        N, K = g.codes.shape
        m = cls(K, N, g.group, bias is not None)
        m.weight_int4.copy_(pack_int4(g.codes))
        m.scales_and_zeros.copy_(scales_and_zeros(g.scales, g.zeros))
        if bias is not None:
            m.bias.data.copy_(bias.detach().float())  # type: ignore[union-attr]
        return m

    @classmethod
    def from_dense(cls, lin: nn.Linear, group: int, symmetric: bool = True) -> Int4Linear:
        return cls.from_groups(quantize_int4_groups(lin.weight, group, symmetric), lin.bias)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        realign_buffers(self)

    def dequantized_weight(self) -> torch.Tensor:  # [N, K] float32, through the kernel (exact in fp32)
        eye = torch.eye(self.in_features)  # [K, K]
        return torch.ops.aten._weight_int4pack_mm_for_cpu(eye, self.weight_int4, self.group,
                                                           self.scales_and_zeros.float()).t().contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., K] -> [..., N], dtype of x
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)  # [M, K]
        # every row count: the kernel with bf16 activations (dequantizing through the kernel's fp32 path
        # for prefill was far slower; we cannot unpack its layout cheaply ourselves)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2.to(torch.bfloat16), self.weight_int4, self.group,
                                                       self.scales_and_zeros).to(x.dtype)  # [M, N]
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, group={self.group}, bias={self.bias is not None}"


@dataclass(frozen=True)
class Int4Config:
    group_size: int = 32
    symmetric: bool = True
    skip: tuple[str, ...] = ("lm_head",)

    def __post_init__(self) -> None:
        if self.group_size not in INT4_GROUPS:
            raise ValueError(f"group_size must be 32, 64 or 128, got {self.group_size}")

    @property
    def name(self) -> str:
        return f"int4-g{self.group_size}" + ("" if self.symmetric else "-asym")


def _n_check(lin: nn.Linear) -> str | None:
    return None if lin.out_features % 16 == 0 else f"N = {lin.out_features} is not a multiple of 16 (kept float32)"


def check_groups(model: nn.Module, group: int, skip: tuple[str, ...], step: str) -> None:
    """A group size that does not divide some layer's K is a user error naming the layers and what fits."""
    bad = [(n, m.in_features) for n, m in iter_linears(model, skip=skip)
           if not _n_check(m) and m.in_features % group]  # type: ignore[arg-type]
    if bad:
        ks = sorted({k for _, k in bad})
        fits = [g for g in INT4_GROUPS if all(k % g == 0 for n, m in iter_linears(model, skip=skip)
                                              for k in [m.in_features] if not _n_check(m))]  # type: ignore[arg-type]
        names = ", ".join(n for n, _ in bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
        raise ValueError(f"{step}: group size {group} does not divide K = {', '.join(map(str, ks))} of layers "
                         f"{names}; group sizes that fit this model: {', '.join(map(str, fits)) or 'none'}")


def restore_int4(model: nn.Module, cfg: Int4Config) -> None:
    restore_linears(model, cfg.skip, lambda lin: Int4Linear(lin.in_features, lin.out_features, cfg.group_size,
                                                            lin.bias is not None, device="meta"), _n_check)


@register_step(r"int4-g(?P<group>\d+)(?P<asym>-asym)?", form="int4-g{32,64,128}[-asym]",
               config=lambda group, asym: Int4Config(int(group), symmetric=asym is None), restore=restore_int4)
def int4_step(model: nn.Module, cfg: Int4Config, calib: object | None) -> StepReport:
    """Group-wise int4 weights, round to nearest (symmetric, or asymmetric with zero points)."""
    check_groups(model, cfg.group_size, cfg.skip, cfg.name)
    return swap_linears(model, cfg.name, cfg.skip,
                        lambda lin: Int4Linear.from_dense(lin, cfg.group_size, cfg.symmetric), _n_check)
