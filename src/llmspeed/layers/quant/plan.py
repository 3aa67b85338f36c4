"""How a quantized linear runs: one frozen `ExecPlan` per layer, and the phase-aware base class that follows it.

A decode step multiplies 1-32 rows by each weight: it streams the weight once and is bandwidth-bound, so the
low-bit kernel (fused dequantization, 4-8x fewer bytes than float32) wins. A prefill multiplies hundreds of
rows: it is compute-bound, and there a dense GEMM on the dequantized weight wins (bf16 on AMX / AVX512-BF16
CPUs, ~10x float32 there; float32 elsewhere).

`ExecPlan` is the whole of a layer's run-time choice: the crossover row count, the prefill path, whether the
decode kernel rounds activations to int8 (the `a8` recipe step) and whether to compute the recipe's math in
plain torch (the fast-path reference). The layer never decides any of it: `llmspeed.runtime.plans` sets one plan
per layer, in one place, from the measured per-machine table, the recipe and the user's overrides.

Numerics of the prefill paths (stated tolerance, tested in tests/layers/quant/test_plan.py):
- "fp32": the dequantized weight in float32, the same math as the kernel up to summation order.
- "bf16": activations rounded to bf16 (unit roundoff 2^-8) and the weight too (int8 codes are exact in bf16; an
  int4 weight u * s + m is rounded once), float32 accumulation: |y - y_ref| <= ~2^-7 * sum_k |x_k w_k|.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

PREFILL_PATHS = ("kernel", "bf16", "fp32")


@dataclass(frozen=True)
class ExecPlan:
    small_m: int = 16  # rows up to which the low-bit kernel runs
    prefill: str = "fp32"  # path for more rows: one of PREFILL_PATHS
    act_q8: bool = False  # decode kernels on int8 activations (per group of 32; the `a8` recipe step)
    reference: bool = False  # every row through the recipe's math in plain torch (fast-path agreement)

    def __post_init__(self) -> None:
        if self.small_m < 1:
            raise ValueError(f"small_m must be >= 1, got {self.small_m}")
        if self.prefill not in PREFILL_PATHS:
            raise ValueError(f"prefill path must be one of {PREFILL_PATHS}, got {self.prefill!r}")


class PhaseAware(nn.Module):
    """Base of the phase-aware linears: subclasses implement `kernel_matmul` and `dense_matmul`.

    `plan` starts as the exact default (float32 prefill, float activations) until runtime sets this layer's plan.
    """

    in_features: int
    out_features: int
    supports_act_q8 = False  # whether `plan.act_q8` changes this layer's decode kernel

    def __init__(self) -> None:
        super().__init__()
        self.plan = ExecPlan()

    def reference_matmul(self, x2: torch.Tensor) -> torch.Tensor:  # [M, K] float32 -> [M, N] float32
        return self.dense_matmul(x2, torch.float32)

    def kernel_matmul(self, x2: torch.Tensor) -> torch.Tensor:  # [M, K] float32 -> [M, N] float32
        raise NotImplementedError

    def dense_matmul(self, x2: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:  # [M, K] -> [M, N] float32
        raise NotImplementedError

    def prepare_for_tracing(self) -> None:
        """Eager work a compiled graph cannot do (data pointers, caches); called before torch.compile traces."""

    def shape_key(self) -> str:  # what the measured plan depends on besides the machine
        return f"{type(self).__name__}:{self.out_features}x{self.in_features}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., K] -> [..., N], dtype of x
        shape = x.shape
        x2 = x.reshape(-1, self.in_features).float()  # [M, K]
        plan = self.plan
        if plan.reference:
            y = self.reference_matmul(x2)
        elif x2.shape[0] <= plan.small_m or plan.prefill == "kernel":
            y = self.kernel_matmul(x2.contiguous())
        else:
            y = self.dense_matmul(x2, torch.bfloat16 if plan.prefill == "bf16" else torch.float32)
        bias = getattr(self, "bias", None)
        if bias is not None:
            y = y + bias
        return y.to(x.dtype).reshape(*shape[:-1], self.out_features)
