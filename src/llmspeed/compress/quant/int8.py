"""`int8`: weight-only int8 (per-output-channel symmetric) linear, phase-aware (compress/quant/phase.py).

Decode rows (M <= plan.small_m) run on llmspeed's own int8 kernel (llmspeed/kernels: float32 activations; with
the `a8` step, activations rounded to int8 per 32 columns and integer dot products; any K). If the C++
kernels are unavailable they run on `torch._weight_int8pack_mm` (bf16 activations), which has two hazards
on this torch build:
- K % 16 != 0: it gives wrong results or crashes (DESIGN saw K % 8 on AVX2; on this AVX-512 machine K = 8 and
  24 segfault while every multiple of 16 is exact): the float32 path instead;
- it segfaults on a weight whose address is not 64-byte aligned (safetensors hands out tensors at file
  offsets): buffers are re-aligned after loading, and a misaligned weight takes the float32 path.
Prefill rows run on a dense GEMM against the int8 codes (exact in bf16 and float32), scaled per output row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llmspeed import kernels
from llmspeed.compress.api import StepReport, register_step
from llmspeed.compress.quant.common import ALIGN, Int8Codes
from llmspeed.compress.quant.phase import PhaseAware
from llmspeed.compress.quant.swap import restore_linears, swap_linears
from llmspeed.kernels import reference as kreference

KERNEL_K_MULTIPLE = 16  # K torch's int8 kernel handles safely on both AVX2 and AVX-512 builds


class Int8Linear(Int8Codes, PhaseAware):
    """y = x @ (q * s)^T + b with q [N, K] int8 and s [N] float32 held as persistent buffers."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False,
                 device: torch.device | str | None = None) -> None:
        super().__init__(in_features, out_features, bias, device)
        self.kernel_ok = in_features % KERNEL_K_MULTIPLE == 0  # for torch's int8 kernel (the fallback)
        self._scales_bf16: tuple[int, torch.Tensor] | None = None  # cache keyed by the scales' storage

    def scales_bf16(self) -> torch.Tensor:
        if torch.compiler.is_compiling() and self._scales_bf16 is not None:  # filled eagerly by runtime/compiled.py
            return self._scales_bf16[1]  # (data_ptr is not traceable; inductor needs a realized buffer here)
        key = self.scales.data_ptr()
        if self._scales_bf16 is None or self._scales_bf16[0] != key:
            self._scales_bf16 = (key, self.scales.to(torch.bfloat16))
        return self._scales_bf16[1]

    def kernel_matmul(self, x2: torch.Tensor) -> torch.Tensor:  # [M, K] float32 -> [M, N] float32
        if kernels.available():  # `a8`: activations rounded to int8 per 32 columns, VNNI dot products
            fn = kernels.int8_linear_q8 if self.act_q8 else kernels.int8_linear
            return fn(x2, self.weight_int8, self.scales)
        # under torch.compile, runtime/compiled.py has re-aligned every weight eagerly before tracing
        aligned = torch.compiler.is_compiling() or self.weight_int8.data_ptr() % ALIGN == 0
        if self.kernel_ok and aligned:
            return torch._weight_int8pack_mm(x2.to(torch.bfloat16), self.weight_int8, self.scales_bf16()).float()
        return self.dense_matmul(x2, torch.float32)

    def reference_matmul(self, x2: torch.Tensor) -> torch.Tensor:  # the recipe's math in plain torch
        if self.act_q8:
            return kreference.int8_linear_q8(x2, self.weight_int8, self.scales)
        return self.dense_matmul(x2, torch.float32)

    def dense_matmul(self, x2: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:  # [M, K] -> [M, N] float32
        return F.linear(x2.to(dtype), self.weight_int8.to(dtype)).float() * self.scales  # codes exact in bf16

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, bias={self.bias is not None}, kernel={self.kernel_ok}"


@dataclass(frozen=True)
class Int8Config:
    skip: tuple[str, ...] = ("lm_head",)

    def __post_init__(self) -> None:
        if not isinstance(self.skip, tuple):
            raise ValueError("skip must be a tuple of module names")


def _empty(lin: nn.Linear) -> Int8Linear:
    return Int8Linear(lin.in_features, lin.out_features, lin.bias is not None, device="meta")


def restore_int8(model: nn.Module, cfg: Int8Config) -> None:
    restore_linears(model, cfg.skip, _empty)


@register_step(r"int8", form="int8", config=lambda: Int8Config(), restore=restore_int8)
def int8_step(model: nn.Module, cfg: Int8Config, calib: object | None) -> StepReport:
    """Weight-only int8, per-output-channel symmetric scales."""
    return swap_linears(model, "int8", cfg.skip, Int8Linear.from_dense)
