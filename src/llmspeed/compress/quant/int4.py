"""`int4-g{32,64,128}[-asym]`: group-wise 4-bit weights on llmspeed's own CPU kernel (llmspeed/kernels).

Storage (persistent buffers, what safetensors holds): `weight_codes` [N, K/2] uint8 (two codes per byte, low
nibble = even column), `weight_scales` and `weight_mins` [N, K/g] float16; w = u * scale + min, GGUF Q4_1's
own form. Decode rows run on the kernel (fused dequantization, float32 activations; with the `a8` step,
activations rounded to int8 per group of 32 for VNNI dot products, as llama.cpp does); prefill rows on a
measured dense GEMM of the dequantized weight (compress/quant/phase.py). Any N works; K % group == 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmspeed import kernels
from llmspeed.compress.api import StepReport, iter_linears, register_step
from llmspeed.compress.quant.common import (
    INT4_GROUPS,
    PARAM_DTYPE,
    Int4Groups,
    quantize_int4_groups,
    realign_buffers,
)
from llmspeed.compress.quant.phase import PhaseAware
from llmspeed.compress.quant.swap import restore_linears, swap_linears
from llmspeed.kernels import reference as kreference


class Int4Linear(PhaseAware):
    """Persistent buffers: `weight_codes` [N, K/2] uint8, `weight_scales` / `weight_mins` [N, K/g] float16."""

    def __init__(self, in_features: int, out_features: int, group: int, bias: bool = False,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        if in_features % group:
            raise ValueError(f"int4 needs K % {group} == 0, got K={in_features}")
        self.in_features, self.out_features, self.group = in_features, out_features, group
        G = in_features // group
        self.register_buffer("weight_codes", torch.empty(out_features, in_features // 2, dtype=torch.uint8,
                                                         device=device))
        self.register_buffer("weight_scales", torch.empty(out_features, G, dtype=PARAM_DTYPE, device=device))
        self.register_buffer("weight_mins", torch.empty(out_features, G, dtype=PARAM_DTYPE, device=device))
        self.bias = nn.Parameter(torch.empty(out_features, device=device), requires_grad=False) if bias else None

    @classmethod
    def from_groups(cls, g: Int4Groups, bias: torch.Tensor | None = None) -> Int4Linear:
        N, K = g.codes.shape
        m = cls(K, N, g.group, bias is not None)
        m.weight_codes.copy_(kernels.pack_nibbles(g.codes))
        m.weight_scales.copy_(g.scales.to(PARAM_DTYPE))
        m.weight_mins.copy_(g.mins.to(PARAM_DTYPE))
        if bias is not None:
            m.bias.data.copy_(bias.detach().float())  # type: ignore[union-attr]
        return m

    @classmethod
    def from_dense(cls, lin: nn.Linear, group: int, symmetric: bool = True) -> Int4Linear:
        return cls.from_groups(quantize_int4_groups(lin.weight, group, symmetric), lin.bias)

    @classmethod
    def concat(cls, mods: list[Int4Linear]) -> Int4Linear:
        """One module holding `mods` stacked along N (buffers concatenated; used by projection fusion)."""
        out = cls(mods[0].in_features, sum(m.out_features for m in mods), mods[0].group,
                  mods[0].bias is not None, device="meta")
        for name in ("weight_codes", "weight_scales", "weight_mins"):
            setattr(out, name, torch.cat([getattr(m, name) for m in mods], dim=0))
        if out.bias is not None:
            out.bias = nn.Parameter(torch.cat([m.bias.detach() for m in mods]), requires_grad=False)  # type: ignore[union-attr]
        out.plan, out.act_q8 = mods[0].plan, mods[0].act_q8
        return out

    def fusable_with(self, other: nn.Module) -> bool:
        return (type(other) is type(self) and other.in_features == self.in_features  # type: ignore[union-attr]
                and other.group == self.group and (other.bias is None) == (self.bias is None))  # type: ignore[union-attr]

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        realign_buffers(self)

    def groups(self) -> Int4Groups:
        return Int4Groups(kernels.unpack_nibbles(self.weight_codes).to(torch.int32), self.weight_scales.float(),
                          self.weight_mins.float(), self.group)

    def dequantized_weight(self) -> torch.Tensor:  # [N, K] float32 (exact: u * s + m of float16 values)
        return kernels.int4_dequantize(self.weight_codes, self.weight_scales, self.weight_mins, self.group)

    def _q8(self) -> bool:
        return self.act_q8 and self.group % 32 == 0

    def kernel_matmul(self, x2: torch.Tensor) -> torch.Tensor:  # [M, K] float32 -> [M, N] float32
        # `a8`: activations rounded to int8 per (row, group), VNNI integer dot products (llama.cpp's Q4_1 x Q8_1)
        fn = kernels.int4_linear_q8 if self._q8() else kernels.int4_linear
        return fn(x2, self.weight_codes, self.weight_scales, self.weight_mins, self.group)

    def reference_matmul(self, x2: torch.Tensor) -> torch.Tensor:  # the recipe's math in plain torch
        if self._q8():
            return kreference.int4_linear_q8(x2, self.weight_codes, self.weight_scales, self.weight_mins, self.group)
        return self.dense_matmul(x2, torch.float32)

    def dense_matmul(self, x2: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:  # [M, K] -> [M, N] float32
        w = kernels.int4_dequantize(self.weight_codes, self.weight_scales, self.weight_mins, self.group, dtype)
        return F.linear(x2.to(dtype), w).float()  # [M, N]

    def shape_key(self) -> str:
        return f"{super().shape_key()}:g{self.group}"

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


def _n_check(lin: nn.Linear) -> str | None:  # every N works on llmspeed's kernel
    return None


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
