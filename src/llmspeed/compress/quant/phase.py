"""Phase-aware quantized linears: few rows (decode) on the low-bit kernel, many rows (prefill) on a dense GEMM.

A decode step multiplies 1-32 rows by each weight: it streams the weight once and is bandwidth-bound, so the
low-bit kernel (fused dequantization, 4-8x fewer bytes than float32) wins. A prefill multiplies hundreds of
rows: it is compute-bound, and there a dense GEMM on the dequantized weight wins (bf16 on AMX / AVX512-BF16
CPUs, ~10x float32 here; float32 elsewhere). `PhasePlan` holds the crossover row count and the prefill path
per module; `llmspeed.runtime.phase` measures it at load (cached per machine) and lets the user override it.

Numerics of the prefill paths (stated tolerance, tested in tests/compress/quant/test_phase.py):
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
class PhasePlan:
    small_m: int = 16  # rows up to which the low-bit kernel runs
    prefill: str = "fp32"  # path for more rows: one of PREFILL_PATHS

    def __post_init__(self) -> None:
        if self.small_m < 1:
            raise ValueError(f"small_m must be >= 1, got {self.small_m}")
        if self.prefill not in PREFILL_PATHS:
            raise ValueError(f"prefill path must be one of {PREFILL_PATHS}, got {self.prefill!r}")


class PhaseAware(nn.Module):
    """Base of the phase-aware linears: subclasses implement `kernel_matmul` and `dense_matmul`."""

    in_features: int
    out_features: int
    plan = PhasePlan()  # class default (exact float32 prefill) until runtime.phase measured this machine
    act_q8 = False  # decode kernels on int8 activations (the `a8` recipe step)
    reference = False  # set by evaluation.fastpath.reference_paths: plain-torch math of the recipe, every row

    def reference_matmul(self, x2: torch.Tensor) -> torch.Tensor:  # [M, K] float32 -> [M, N] float32
        return self.dense_matmul(x2, torch.float32)

    def kernel_matmul(self, x2: torch.Tensor) -> torch.Tensor:  # [M, K] float32 -> [M, N] float32
        raise NotImplementedError

    def dense_matmul(self, x2: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:  # [M, K] -> [M, N] float32
        raise NotImplementedError

    def shape_key(self) -> str:  # what the measured plan depends on besides the machine
        return f"{type(self).__name__}:{self.out_features}x{self.in_features}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., K] -> [..., N], dtype of x
        shape = x.shape
        x2 = x.reshape(-1, self.in_features).float()  # [M, K]
        plan = self.plan
        if self.reference:
            y = self.reference_matmul(x2)
        elif x2.shape[0] <= plan.small_m or plan.prefill == "kernel":
            y = self.kernel_matmul(x2.contiguous())
        else:
            y = self.dense_matmul(x2, torch.bfloat16 if plan.prefill == "bf16" else torch.float32)
        bias = getattr(self, "bias", None)
        if bias is not None:
            y = y + bias
        return y.to(x.dtype).reshape(*shape[:-1], self.out_features)
