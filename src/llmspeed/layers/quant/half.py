"""Half-precision Linear: weights stored in bf16 / fp16; norms, softmax and logits stay float32.

The model feeds float32 activations; `HalfLinear` casts them in and the result back out. On an AVX2 CPU
without AVX512-BF16/AMX a half-precision GEMM is ~130x slower than fp32 (DESIGN.md §6), so there only
few-row calls (decode, M <= SMALL_M) run natively in half precision and larger calls upcast the weight to
float32 for the fp32 GEMM (storage and bandwidth stay half; the arithmetic is exact on the half weights).
CPUs with native half matmuls (`fast_half_matmul`) run every call in half precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmspeed.util.cpu import fast_half_matmul

SMALL_M = 4


class HalfLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, dtype: torch.dtype, bias: bool = False,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=dtype, device=device),
                                   requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_features, device=device), requires_grad=False) if bias else None
        native = fast_half_matmul(str(dtype).removeprefix("torch."))
        self.small_m = (1 << 62) if native else SMALL_M  # rows up to which we stay in half

    @classmethod
    def from_dense(cls, lin: nn.Linear, dtype: torch.dtype) -> HalfLinear:
        m = cls(lin.in_features, lin.out_features, dtype, lin.bias is not None)
        m.weight.data.copy_(lin.weight.detach().to(dtype))
        if lin.bias is not None:
            m.bias.data.copy_(lin.bias.detach().float())  # type: ignore[union-attr]
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., K] -> [..., N], dtype of x
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)  # [M, K]
        if x2.shape[0] <= self.small_m:
            y = F.linear(x2.to(self.weight.dtype), self.weight).to(x.dtype)  # [M, N], half arithmetic
        else:
            y = F.linear(x2.float(), self.weight.float()).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, dtype={self.weight.dtype}"
