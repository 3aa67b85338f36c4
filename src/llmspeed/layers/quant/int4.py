"""Group-wise 4-bit linear on llmspeed's own CPU kernel (llmspeed/kernels), phase-aware (layers/quant/plan.py).

Storage (persistent buffers, what safetensors holds): `weight_codes` [N, K/2] uint8 (two codes per byte, low
nibble = even column), `weight_scales` and `weight_mins` [N, K/g] float16; w = u * scale + min, GGUF Q4_1's
own form. Decode rows run on the kernel (fused dequantization, float32 activations; with `plan.act_q8`,
activations rounded to int8 per group of 32 for integer dot products, as llama.cpp does); prefill rows on a
measured dense GEMM of the dequantized weight. Any N works; K % group == 0.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmspeed import kernels
from llmspeed.kernels import reference as kreference
from llmspeed.layers.quant.formats import PARAM_DTYPE, Int4Groups, quantize_int4_groups, realign_buffers
from llmspeed.layers.quant.plan import PhaseAware


class Int4Linear(PhaseAware):
    """Persistent buffers: `weight_codes` [N, K/2] uint8, `weight_scales` / `weight_mins` [N, K/g] float16."""

    supports_act_q8 = True

    def __init__(self, in_features: int, out_features: int, group: int, bias: bool = False,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        if in_features % group:
            raise ValueError(f"int4 needs K % {group} == 0, got K={in_features}")
        self.in_features, self.out_features, self.group = in_features, out_features, group
        G = in_features // group
        self.register_buffer("weight_codes", torch.empty(out_features, in_features // 2, dtype=torch.uint8,
                                                         device=device))
        self.register_buffer("weight_scales", torch.empty(out_features, G, dtype=PARAM_DTYPE, device=device))
        self.register_buffer("weight_mins", torch.empty(out_features, G, dtype=PARAM_DTYPE, device=device))
        self.bias = nn.Parameter(torch.empty(out_features, device=device), requires_grad=False) if bias else None

    @classmethod
    def from_groups(cls, g: Int4Groups, bias: torch.Tensor | None = None) -> Int4Linear:
        N, K = g.codes.shape
        m = cls(K, N, g.group, bias is not None)
        m.weight_codes.copy_(kernels.pack_nibbles(g.codes))
        m.weight_scales.copy_(g.scales.to(PARAM_DTYPE))
        m.weight_mins.copy_(g.mins.to(PARAM_DTYPE))
        if bias is not None:
            m.bias.data.copy_(bias.detach().float())  # type: ignore[union-attr]
        return m

    @classmethod
    def from_dense(cls, lin: nn.Linear, group: int, symmetric: bool = False) -> Int4Linear:
        return cls.from_groups(quantize_int4_groups(lin.weight, group, symmetric), lin.bias)

    @classmethod
    def concat(cls, mods: list[Int4Linear]) -> Int4Linear:
        """One module holding `mods` stacked along N (buffers concatenated; used by projection fusion)."""
        out = cls(mods[0].in_features, sum(m.out_features for m in mods), mods[0].group,
                  mods[0].bias is not None, device="meta")
        for name in ("weight_codes", "weight_scales", "weight_mins"):
            setattr(out, name, torch.cat([getattr(m, name) for m in mods], dim=0))
        if out.bias is not None:
            out.bias = nn.Parameter(torch.cat([m.bias.detach() for m in mods]), requires_grad=False)  # type: ignore[union-attr]
        out.plan = mods[0].plan
        return out

    def fusable_with(self, other: nn.Module) -> bool:
        return (type(other) is type(self) and other.in_features == self.in_features  # type: ignore[union-attr]
                and other.group == self.group and (other.bias is None) == (self.bias is None))  # type: ignore[union-attr]

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        realign_buffers(self)

    def groups(self) -> Int4Groups:
        return Int4Groups(kernels.unpack_nibbles(self.weight_codes).to(torch.int32), self.weight_scales.float(),
                          self.weight_mins.float(), self.group)

    def dequantized_weight(self) -> torch.Tensor:  # [N, K] float32 (exact: u * s + m of float16 values)
        return kernels.int4_dequantize(self.weight_codes, self.weight_scales, self.weight_mins, self.group)

    def _q8(self) -> bool:
        return self.plan.act_q8 and self.group % 32 == 0

    def kernel_matmul(self, x2: torch.Tensor) -> torch.Tensor:  # [M, K] float32 -> [M, N] float32
        # act_q8: activations rounded to int8 per (row, group), VNNI integer dot products (llama.cpp's Q4_1 x Q8_1)
        fn = kernels.int4_linear_q8 if self._q8() else kernels.int4_linear
        return fn(x2, self.weight_codes, self.weight_scales, self.weight_mins, self.group)

    def reference_matmul(self, x2: torch.Tensor) -> torch.Tensor:  # the recipe's math in plain torch
        if self._q8():
            return kreference.int4_linear_q8(x2, self.weight_codes, self.weight_scales, self.weight_mins, self.group)
        return self.dense_matmul(x2, torch.float32)

    def dense_matmul(self, x2: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:  # [M, K] -> [M, N] float32
        w = kernels.int4_dequantize(self.weight_codes, self.weight_scales, self.weight_mins, self.group, dtype)
        return F.linear(x2.to(dtype), w).float()  # [M, N]

    def shape_key(self) -> str:
        return f"{super().shape_key()}:g{self.group}"

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, group={self.group}, bias={self.bias is not None}"
