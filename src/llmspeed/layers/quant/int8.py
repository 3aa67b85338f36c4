"""int8 weights, per output channel: the shared storage (`Int8Codes`) and the phase-aware `Int8Linear`.

Decode rows (M <= plan.small_m) run on llmspeed's own int8 kernel (llmspeed/kernels: float32 activations; with
`plan.act_q8`, activations rounded to int8 per 32 columns and integer dot products; any K). If the C++
kernels are unavailable they run on `torch._weight_int8pack_mm` (bf16 activations), which has two hazards
on this torch build:
- K % 16 != 0: it gives wrong results or crashes (DESIGN saw K % 8 on AVX2; on an AVX-512 machine K = 8 and
  24 segfault while every multiple of 16 is exact): the float32 path instead;
- it segfaults on a weight whose address is not 64-byte aligned (safetensors hands out tensors at file
  offsets): buffers are re-aligned after loading, and a misaligned weight takes the float32 path.
Prefill rows run on a dense GEMM against the int8 codes (exact in bf16 and float32), scaled per output row.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmspeed import kernels
from llmspeed.kernels import reference as kreference
from llmspeed.layers.quant.formats import ALIGN, quantize_int8_per_channel, realign_buffers
from llmspeed.layers.quant.plan import PhaseAware

KERNEL_K_MULTIPLE = 16  # K torch's int8 kernel handles safely on both AVX2 and AVX-512 builds


class Int8Codes(nn.Module):
    """Per-output-channel int8 storage shared by the int8 linears: `weight_int8` [N, K] int8, `scales` [N] float32
    (persistent buffers, so safetensors holds them) and an optional float32 bias. Subclasses add the kernel."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_int8", torch.empty(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.empty(out_features, dtype=torch.float32, device=device))
        self.bias = nn.Parameter(torch.empty(out_features, device=device), requires_grad=False) if bias else None

    @classmethod
    def from_dense(cls, lin: nn.Linear) -> Any:
        q, s = quantize_int8_per_channel(lin.weight)
        m = cls(lin.in_features, lin.out_features, lin.bias is not None)
        m.weight_int8.copy_(q)
        m.scales.copy_(s)
        if lin.bias is not None:
            m.bias.data.copy_(lin.bias.detach().float())  # type: ignore[union-attr]
        return m

    @classmethod
    def concat(cls, mods: list[Any]) -> Any:
        """One module holding `mods` stacked along N (buffers concatenated; used by projection fusion)."""
        out = cls(mods[0].in_features, sum(m.out_features for m in mods), mods[0].bias is not None, device="meta")
        out.weight_int8 = torch.cat([m.weight_int8 for m in mods], dim=0)  # [sum N, K]
        out.scales = torch.cat([m.scales for m in mods])  # [sum N]
        if out.bias is not None:
            out.bias = nn.Parameter(torch.cat([m.bias.detach() for m in mods]), requires_grad=False)
        if isinstance(out, PhaseAware):
            out.plan = mods[0].plan
        return out

    def fusable_with(self, other: nn.Module) -> bool:
        return (type(other) is type(self) and other.in_features == self.in_features  # type: ignore[union-attr]
                and (other.bias is None) == (self.bias is None))  # type: ignore[union-attr]

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        realign_buffers(self)  # safetensors hands out tensors at file offsets; the kernels need 64-byte alignment

    def dequantized_weight(self) -> torch.Tensor:  # [N, K] float32
        return self.weight_int8.float() * self.scales[:, None]


class Int8Linear(Int8Codes, PhaseAware):
    """y = x @ (q * s)^T + b with q [N, K] int8 and s [N] float32 held as persistent buffers."""

    supports_act_q8 = True

    def __init__(self, in_features: int, out_features: int, bias: bool = False,
                 device: torch.device | str | None = None) -> None:
        super().__init__(in_features, out_features, bias, device)
        self.kernel_ok = in_features % KERNEL_K_MULTIPLE == 0  # for torch's int8 kernel (the fallback)
        self._scales_bf16: tuple[int, torch.Tensor] | None = None  # cache keyed by the scales' storage

    def scales_bf16(self) -> torch.Tensor:
        if torch.compiler.is_compiling() and self._scales_bf16 is not None:  # filled eagerly before tracing
            return self._scales_bf16[1]  # (data_ptr is not traceable; inductor needs a realized buffer here)
        key = self.scales.data_ptr()
        if self._scales_bf16 is None or self._scales_bf16[0] != key:
            self._scales_bf16 = (key, self.scales.to(torch.bfloat16))
        return self._scales_bf16[1]

    def prepare_for_tracing(self) -> None:
        """Eager work a compiled graph cannot do (data pointers): re-align the codes, fill the bf16 scales."""
        if self.weight_int8.data_ptr() % ALIGN:
            realign_buffers(self)
        self.scales_bf16()

    def kernel_matmul(self, x2: torch.Tensor) -> torch.Tensor:  # [M, K] float32 -> [M, N] float32
        if kernels.available():  # act_q8: activations rounded to int8 per 32 columns, integer dot products
            fn = kernels.int8_linear_q8 if self.plan.act_q8 else kernels.int8_linear
            return fn(x2, self.weight_int8, self.scales)
        # under torch.compile, prepare_for_tracing has re-aligned every weight eagerly before tracing
        aligned = torch.compiler.is_compiling() or self.weight_int8.data_ptr() % ALIGN == 0
        if self.kernel_ok and aligned:
            return torch._weight_int8pack_mm(x2.to(torch.bfloat16), self.weight_int8, self.scales_bf16()).float()
        return self.dense_matmul(x2, torch.float32)

    def reference_matmul(self, x2: torch.Tensor) -> torch.Tensor:  # the recipe's math in plain torch
        if self.plan.act_q8:
            return kreference.int8_linear_q8(x2, self.weight_int8, self.scales)
        return self.dense_matmul(x2, torch.float32)

    def dense_matmul(self, x2: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:  # [M, K] -> [M, N] float32
        return F.linear(x2.to(dtype), self.weight_int8.to(dtype)).float() * self.scales  # codes exact in bf16

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, bias={self.bias is not None}, kernel={self.kernel_ok}"
