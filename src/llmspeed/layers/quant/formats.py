"""Quantization formats of the quantized linears: per-channel int8 and group-wise int4 math, buffer alignment.

Conventions (derived here, tested in tests/layers/quant/test_formats.py):
- int8 symmetric per output channel: s = max|w| / 127, q = round(w / s) in [-127, 127], w ~ q * s.
- int8 symmetric per group of 32 input columns (GGUF Q8_0's form): d = max|w| / 127 rounded UP to float16 (the
  stored precision; rounding up keeps |w / d| <= 127, so the grid covers the group), q = round(w / d), w ~ q * d
  with |w - q d| <= d / 2.
- int4 unsigned codes u in [0, 15] per group of `group` input columns, w = u * scale + min (llmspeed's
  kernels, llmspeed/kernels/reference.py; scales and mins stored as float16).
  symmetric: min = -8 s, u = q + 8 with q = round(w / s) in [-8, 7], s = max(-wmin / 8, wmax / 7)
             (uses the whole [-8, 7] range; |w - w_hat| <= s / 2 since w / s lies in [-8, 7]).
  asymmetric: s = (wmax - wmin) / 15, min = wmin, u = round((w - min) / s) in [0, 15]: the group's
             min and max are on the grid, so all-positive (or all-negative) ranges waste no code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

INT4_GROUPS = (32, 64, 128)
PARAM_DTYPE = torch.float16  # int4 scales / mins as stored (GGUF Q4_1 stores float16 too)
_EPS = 1e-12


ALIGN = 64  # bytes; torch's CPU allocator aligns to this, tensors cut from a safetensors file may not be


def realign_buffers(module: torch.nn.Module) -> None:
    """Copy any own buffer that is misaligned or non-contiguous (the low-bit kernels crash on those).

    Called after `load_state_dict(assign=True)`: safetensors hands out tensors at arbitrary file offsets,
    and `torch._weight_int8pack_mm` segfaults on an int8 weight whose address is not 64-byte aligned.
    """
    for name, b in list(module.named_buffers(recurse=False)):
        if b is not None and not b.is_meta and (b.data_ptr() % ALIGN or not b.is_contiguous()):
            setattr(module, name, b.contiguous().clone())


def quantize_int8_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] float -> (q [N, K] int8, scales [N] float32), symmetric per output row."""
    w = w.detach().float()
    scales = (w.abs().amax(dim=1) / 127.0).clamp_min(_EPS)  # [N]
    q = torch.round(w / scales[:, None]).clamp_(-127, 127).to(torch.int8)  # [N, K]
    return q, scales


def dequantize_int8(q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return q.float() * scales.float()[:, None]  # [N, K]


def _round_up_to(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Round positive `x` to `dtype`, never below the float32 value (so the grid still covers the range)."""
    y = x.to(dtype)
    low = y.float() < x
    if low.any():
        y = torch.where(low, torch.nextafter(y, torch.full_like(y, float("inf"))), y)
    return y.float()


def quantize_int8_groups(w: torch.Tensor, group: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] float -> (q [N, K] int8, d [N, K // group] float16), symmetric per (row, group), round to nearest."""
    N, K = w.shape
    if K % group:
        raise ValueError(f"group size {group} does not divide K = {K}")
    wg = w.detach().float().reshape(N, K // group, group)  # [N, G, g]
    d = _round_up_to((wg.abs().amax(-1) / 127.0).clamp_min(_EPS), PARAM_DTYPE)  # [N, G], float16 values
    q = torch.round(wg / d[..., None]).clamp_(-127, 127).to(torch.int8)  # [N, G, g]
    return q.reshape(N, K), d.to(PARAM_DTYPE)


@dataclass(frozen=True)
class Int4Groups:
    """Group-wise int4 in min form: w = u * scale + min (GGUF Q4_1's own form, what llmspeed's kernel reads)."""

    codes: torch.Tensor  # [N, K] int32 in [0, 15]
    scales: torch.Tensor  # [N, K // group] float32 (values already representable in the storage dtype)
    mins: torch.Tensor  # [N, K // group] float32 (same)
    group: int

    def dequantize(self) -> torch.Tensor:  # [N, K] float32
        s = self.scales.repeat_interleave(self.group, dim=1)
        m = self.mins.repeat_interleave(self.group, dim=1)
        return self.codes.float() * s + m



def int4_params(w: torch.Tensor, group: int, symmetric: bool,
                param_dtype: torch.dtype = PARAM_DTYPE) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group (scales, mins) [N, K // group] for weight [N, K], representable in `param_dtype` (float32 values)."""
    N, K = w.shape
    wg = w.detach().float().reshape(N, K // group, group)  # [N, G, g]
    wmin, wmax = wg.amin(-1), wg.amax(-1)  # [N, G]
    if symmetric:  # grid (u - 8) * s: the whole [-8, 7] range, min = -8 s (exact: a power-of-two multiple)
        scales = _round_up_to(torch.maximum(-wmin / 8.0, wmax / 7.0).clamp_min(_EPS), param_dtype)
        mins = -8.0 * scales
    else:  # the group's min and max on the grid (up to the storage rounding of min and scale)
        scales = _round_up_to(((wmax - wmin) / 15.0).clamp_min(_EPS), param_dtype)
        mins = wmin.to(param_dtype).float()
    return scales, mins


def int4_codes(w: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, group: int) -> torch.Tensor:
    """Round-to-nearest codes [N, K] int32 in [0, 15] for given per-group scales/mins [N, K // group]."""
    s = scales.repeat_interleave(group, dim=1)  # [N, K]
    m = mins.repeat_interleave(group, dim=1)
    return torch.round((w.detach().float() - m) / s).clamp_(0, 15).to(torch.int32)


def quantize_int4_groups(w: torch.Tensor, group: int, symmetric: bool = False,
                         param_dtype: torch.dtype = PARAM_DTYPE) -> Int4Groups:
    """[N, K] float -> Int4Groups (round to nearest)."""
    K = w.shape[1]
    if K % group:
        raise ValueError(f"group size {group} does not divide K = {K}")
    scales, mins = int4_params(w, group, symmetric, param_dtype)
    return Int4Groups(int4_codes(w, scales, mins, group), scales, mins, group)
