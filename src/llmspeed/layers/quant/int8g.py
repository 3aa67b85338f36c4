"""int8 weights with one float16 scale per 32 input columns (GGUF Q8_0's own form), phase-aware.

Storage (persistent buffers, what safetensors holds): `weight_int8` [N, K] int8 and `weight_scales` [N, K/32]
float16; w[n, k] = q[n, k] * d[n, k // 32], exact in float32. A GGUF Q8_0 tensor imports code for code and scale
for scale (layers/quant/gguf_blocks.py), and `from_dense` rounds float weights to the same grid
(formats.quantize_int8_groups). Decode rows run on llmspeed's `int8g_linear` kernel (float32 activations, the
weight decoded in registers: a float32 GEMM on the dequantized weight up to summation order); prefill rows on the
measured dense GEMM of the dequantized weight.

At a quarter of float32's bytes (plus 1/16 for the scales) this is what the tied SmolLM2 vocabulary projection
reads on every decode step; the tied embedding gathers rows of the same codes (layers/quant/embedding.py).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmspeed import kernels
from llmspeed.kernels.reference import INT8G_GROUP, int8g_dequantize
from llmspeed.layers.quant.formats import ALIGN, PARAM_DTYPE, quantize_int8_groups, realign_buffers
from llmspeed.layers.quant.plan import PhaseAware

GROUP = INT8G_GROUP  # input columns per scale


class Int8GroupLinear(PhaseAware):
    """y = x @ (q * d)^T + b, q [N, K] int8 and d [N, K/32] float16 held as persistent buffers."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        if in_features % GROUP:
            raise ValueError(f"int8 groups of {GROUP} need K % {GROUP} == 0, got K={in_features}")
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_int8", torch.empty(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("weight_scales", torch.empty(out_features, in_features // GROUP, dtype=PARAM_DTYPE,
                                                          device=device))
        self.bias = nn.Parameter(torch.empty(out_features, device=device), requires_grad=False) if bias else None

    @classmethod
    def from_codes(cls, q: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None) -> Int8GroupLinear:
        """From codes [N, K] int8 and scales [N, K/32] (float16 values; stored as float16)."""
        N, K = q.shape
        m = cls(K, N, bias is not None)
        m.weight_int8.copy_(q)
        m.weight_scales.copy_(scales.to(PARAM_DTYPE))
        if bias is not None:
            m.bias.data.copy_(bias.detach().float())  # type: ignore[union-attr]
        return m

    @classmethod
    def from_dense(cls, lin: nn.Linear) -> Int8GroupLinear:
        """Round to nearest per (row, 32 columns), symmetric: d = max|w| / 127 rounded up to float16."""
        q, d = quantize_int8_groups(lin.weight, GROUP)
        return cls.from_codes(q, d, lin.bias)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        realign_buffers(self)  # safetensors hands out tensors at file offsets

    def prepare_for_tracing(self) -> None:
        """Eager work a compiled graph cannot do (data pointers): re-align the buffers."""
        if self.weight_int8.data_ptr() % ALIGN or self.weight_scales.data_ptr() % ALIGN:
            realign_buffers(self)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:  # [N, K] (exact in float32)
        return int8g_dequantize(self.weight_int8, self.weight_scales, dtype)

    def kernel_matmul(self, x2: torch.Tensor) -> torch.Tensor:  # [M, K] float32 -> [M, N] float32
        return kernels.int8g_linear(x2, self.weight_int8, self.weight_scales)

    def dense_matmul(self, x2: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:  # [M, K] -> [M, N] float32
        return F.linear(x2.to(dtype), self.dequantized_weight(dtype)).float()

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, group={GROUP}, bias={self.bias is not None}"
