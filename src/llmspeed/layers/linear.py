"""Projection fusion that keeps Hugging Face module names.

`FusedLinears` concatenates the weights of several dense `nn.Linear`s (q/k/v, gate/up) into one matrix and
re-points each Linear's weight at its row-slice of it, so memory is not doubled, state dicts keep their
names, and one GEMM replaces several. If a compression step later replaces one of the Linears (or its
weight), or registers a forward hook on one (calibration does), `valid()` turns false and the model falls
back to the separate modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FusedLinears:
    def __init__(self, linears: list[nn.Linear]) -> None:
        self.linears = linears
        self.sizes = [lin.out_features for lin in linears]
        with torch.no_grad():
            weight = torch.cat([lin.weight.detach() for lin in linears], dim=0)  # [sum(N_i), K]
            has_bias = [lin.bias is not None for lin in linears]
            bias = torch.cat([lin.bias.detach() for lin in linears]) if all(has_bias) else None
        self.weight, self.bias = weight, bias
        offset = 0
        for lin, n in zip(linears, self.sizes, strict=True):
            lin.weight = nn.Parameter(weight[offset:offset + n], requires_grad=False)  # a view into the fused matrix
            if bias is not None:
                lin.bias = nn.Parameter(bias[offset:offset + n], requires_grad=False)
            offset += n
        self._ptrs = [lin.weight.data_ptr() for lin in linears]

    @staticmethod
    def fusable(mods: list[nn.Module]) -> bool:
        if not all(type(m) is nn.Linear for m in mods):
            return False
        w0 = mods[0].weight  # type: ignore[union-attr]
        same_bias = len({m.bias is None for m in mods}) == 1  # type: ignore[union-attr]
        return same_bias and all(m.weight.dtype == w0.dtype and m.in_features == mods[0].in_features  # type: ignore[union-attr]
                                 for m in mods)

    def valid(self, mods: tuple[nn.Module, ...]) -> bool:
        if torch.compiler.is_compiling():  # data_ptr is not traceable; runtime/compiled.py checks eagerly first
            return True
        return all(m is lin and m.weight.data_ptr() == p and not m._forward_pre_hooks  # type: ignore[union-attr]
                   and not m._forward_hooks for m, lin, p in zip(mods, self.linears, self._ptrs, strict=True))

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:  # [..., K] -> list of [..., N_i]
        return list(F.linear(x, self.weight, self.bias).split(self.sizes, dim=-1))
