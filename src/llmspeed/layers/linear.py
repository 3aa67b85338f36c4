"""Projection fusion that keeps Hugging Face module names.

`FusedLinears` concatenates the weights of several linears (q/k/v, gate/up) into one module and re-points
each original module's tensors at their row-slice of it, so memory is not doubled, state dicts keep their
names, and one GEMM (or one low-bit kernel call) replaces several. Dense `nn.Linear`s fuse through their
weights; quantized linears fuse when they provide `concat(mods)` (buffers stacked along N) and
`fusable_with(other)`. If a compression step later replaces one of the modules (or its weight), or registers
a forward hook on one (calibration does), `valid()` turns false and the model falls back to the separate
modules. The fast-path reference drops a model's fusions for a while (runtime/plans.reference_paths).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

FUSED_PARTS = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")  # the projections a block may fuse


def fused_parts(block: nn.Module) -> tuple[nn.Module, ...]:
    """The projections of `block` that its `fused` module stands in for, as its forward checks them (`valid`)."""
    return tuple(getattr(block, n) for n in FUSED_PARTS if hasattr(block, n))


def _tensors(mod: nn.Module) -> dict[str, torch.Tensor]:
    """The row-major [N, ...] tensors a fused module slices: the Linear weight/bias, or the module's buffers."""
    if type(mod) is nn.Linear:
        out = {"weight": mod.weight}
    else:
        out = dict(mod.named_buffers(recurse=False))
    if getattr(mod, "bias", None) is not None:
        out["bias"] = mod.bias  # type: ignore[assignment]
    return out


class FusedLinears:
    def __init__(self, linears: list[nn.Module]) -> None:
        self.linears = linears
        self.sizes = [int(lin.out_features) for lin in linears]  # type: ignore[arg-type]
        with torch.no_grad():
            if type(linears[0]) is nn.Linear:
                self.fused: Callable[[torch.Tensor], torch.Tensor] = _DenseFused(linears)  # type: ignore[arg-type]
            else:
                self.fused = type(linears[0]).concat(linears)  # type: ignore[attr-defined]
        offset = 0
        for lin, n in zip(linears, self.sizes, strict=True):
            for name, t in _tensors(self.fused).items():  # type: ignore[arg-type]
                part = t[offset:offset + n]  # a view into the fused tensor
                if isinstance(getattr(lin, name), nn.Parameter):
                    setattr(lin, name, nn.Parameter(part, requires_grad=False))
                else:
                    setattr(lin, name, part)
            offset += n
        self._ptrs = [self._key(lin) for lin in linears]

    @staticmethod
    def _key(mod: nn.Module) -> int:
        return next(iter(_tensors(mod).values())).data_ptr()

    @staticmethod
    def fusable(mods: list[nn.Module]) -> bool:
        m0 = mods[0]
        if type(m0) is nn.Linear:
            if not all(type(m) is nn.Linear for m in mods):
                return False
            same_bias = len({m.bias is None for m in mods}) == 1  # type: ignore[union-attr]
            return same_bias and all(m.weight.dtype == m0.weight.dtype  # type: ignore[union-attr]
                                     and m.in_features == m0.in_features for m in mods)  # type: ignore[union-attr]
        if not (hasattr(m0, "concat") and hasattr(m0, "fusable_with")):
            return False
        return all(m0.fusable_with(m) for m in mods[1:])  # type: ignore[operator]

    def valid(self, mods: tuple[nn.Module, ...]) -> bool:
        if torch.compiler.is_compiling():  # data_ptr is not traceable; runtime/compiled.py checks eagerly first
            return True
        return all(m is lin and self._key(m) == p and not m._forward_pre_hooks and not m._forward_hooks
                   for m, lin, p in zip(mods, self.linears, self._ptrs, strict=True))

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:  # [..., K] -> list of [..., N_i]
        return list(self.fused(x).split(self.sizes, dim=-1))


class _DenseFused:
    """Dense weights of several nn.Linears stacked along N: one F.linear."""

    def __init__(self, linears: list[nn.Linear]) -> None:
        self.weight = torch.cat([lin.weight.detach() for lin in linears], dim=0)  # [sum(N_i), K]
        biases = [lin.bias for lin in linears]
        self.bias = torch.cat([b.detach() for b in biases]) if all(b is not None for b in biases) else None
        self.out_features = self.weight.shape[0]

    def named_buffers(self, recurse: bool = False) -> list[tuple[str, torch.Tensor]]:
        return [("weight", self.weight)]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # [..., K] -> [..., sum(N_i)]
        return F.linear(x, self.weight, self.bias)
