"""int8 weights + per-token dynamic int8 activations through fbgemm's dynamic linear.

`torch.ops.quantized.linear_dynamic` is what `torch.ao.quantization.quantize_dynamic` runs; on this CPU it
beats fp32 at every row count measured (DESIGN.md §6). The prepacked weight is an opaque object that
safetensors cannot hold, so the persistent state is the int8 codes + per-channel scales (+ bias) and the
prepack is rebuilt lazily on first use after construction or load.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from llmspeed.layers.quant.int8 import Int8Codes


class Int8DynLinear(Int8Codes):
    """Buffers `weight_int8` [N, K] int8 and `scales` [N] float32; fbgemm prepack cached (not saved)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False,
                 device: torch.device | str | None = None, reduce_range: bool = True) -> None:
        super().__init__(in_features, out_features, bias, device)
        self.reduce_range = reduce_range  # 7-bit activations: avoids int16 saturation in fbgemm's AVX2 path
        self._packed: Any = None
        self._packed_key: tuple[int, ...] = ()

    def _prepacked(self) -> Any:
        key = (self.weight_int8.data_ptr(), self.scales.data_ptr(),
               self.bias.data_ptr() if self.bias is not None else 0)
        if self._packed is None or key != self._packed_key:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # quantized-tensor deprecation notice
                qw = torch._make_per_channel_quantized_tensor(
                    self.weight_int8, self.scales.double(), torch.zeros(self.out_features, dtype=torch.long), 0)
                bias = self.bias.detach().float() if self.bias is not None else None
                self._packed = torch.ops.quantized.linear_prepack(qw, bias)
            self._packed_key = key
        return self._packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., K] -> [..., N], dtype of x
        shape = x.shape
        x2 = x.reshape(-1, self.in_features).float().contiguous()  # [M, K]
        y = torch.ops.quantized.linear_dynamic(x2, self._prepacked(), self.reduce_range)  # [M, N]
        return y.to(x.dtype).reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, bias={self.bias is not None}"
