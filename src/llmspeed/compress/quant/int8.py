"""`int8`: weight-only int8 (per-output-channel symmetric) linear.

Kernel choice per call, measured on this 2-core AVX2 CPU (torch 2.13, docs/decisions.md "Compression"):
- few rows (decode, M <= SMALL_M): `torch._weight_int8pack_mm` with bf16 activations (K=576, N=1536, M=1:
  30 us vs fp32 dense 33 us in cache, and it streams 4x fewer bytes than fp32 from DRAM);
- many rows (prefill): the int8 kernel is ~2x slower than fp32 GEMM there (M=512: 5.7 vs 2.6 ms), so
  we matmul in float32 against the int8 codes and scale the output rows: (x @ q^T) * s (2.7 ms);
- K % 16 != 0: `_weight_int8pack_mm` gives wrong results or crashes (DESIGN saw K % 8 on AVX2; on this
  AVX-512 machine K = 8 and 24 segfault while every multiple of 16 is exact): always the float32 path.
- it also segfaults on a weight whose address is not 64-byte aligned (safetensors hands out tensors at file
  offsets): buffers are re-aligned after loading, and a misaligned weight takes the float32 path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llmspeed.compress.api import StepReport, register_step
from llmspeed.compress.quant.common import ALIGN, Int8Codes
from llmspeed.compress.quant.swap import restore_linears, swap_linears

KERNEL_K_MULTIPLE = 16  # K the int8 kernel handles safely on both AVX2 and AVX-512 builds
SMALL_M = 16  # rows up to which the int8 kernel (bf16 activations) beats the float32 path


class Int8Linear(Int8Codes):
    """y = x @ (q * s)^T + b with q [N, K] int8 and s [N] float32 held as persistent buffers."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False,
                 device: torch.device | str | None = None) -> None:
        super().__init__(in_features, out_features, bias, device)
        self.kernel_ok = in_features % KERNEL_K_MULTIPLE == 0
        self._scales_bf16: tuple[int, torch.Tensor] | None = None  # cache keyed by the scales' storage

    def scales_bf16(self) -> torch.Tensor:
        if torch.compiler.is_compiling() and self._scales_bf16 is not None:  # filled eagerly by runtime/compiled.py
            return self._scales_bf16[1]  # (data_ptr is not traceable; inductor needs a realized buffer here)
        key = self.scales.data_ptr()
        if self._scales_bf16 is None or self._scales_bf16[0] != key:
            self._scales_bf16 = (key, self.scales.to(torch.bfloat16))
        return self._scales_bf16[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., K] -> [..., N], dtype of x
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)  # [M, K]
        # the kernel segfaults on a misaligned weight (K % 16 != 0 or an address not 64-byte aligned)
        # (under torch.compile, runtime/compiled.py has re-aligned every weight eagerly before tracing)
        aligned = torch.compiler.is_compiling() or self.weight_int8.data_ptr() % ALIGN == 0
        if self.kernel_ok and x2.shape[0] <= SMALL_M and aligned:
            y = torch._weight_int8pack_mm(x2.to(torch.bfloat16), self.weight_int8,
                                          self.scales_bf16()).to(x.dtype)  # [M, N]
        else:
            y = (F.linear(x2.float(), self.weight_int8.float()) * self.scales).to(x.dtype)  # [M, N]
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*shape[:-1], self.out_features)

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
    rep = swap_linears(model, "int8", cfg.skip, Int8Linear.from_dense)
    n_slow = sum(1 for _, m in model.named_modules() if isinstance(m, Int8Linear) and not m.kernel_ok)
    if n_slow:
        rep.notes.append(f"{n_slow} layers have K % {KERNEL_K_MULTIPLE} != 0: "
                         "float32 fallback path (the int8 kernel breaks there)")
    return rep
