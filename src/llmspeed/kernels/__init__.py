"""llmspeed's CPU kernels for low-bit linears: C++ (AVX-512 / AVX2+FMA / scalar, chosen at runtime, threads over
output rows with at::parallel_for) built on first use, with the pure-torch reference (reference.py) as fallback.

Instruction-set levels (`isa_levels()`; the highest the CPU runs is used, tests force each one in turn with
`torch.ops.llmspeed.isa(level)`): 4 avx512-vnni, 3 avx512 (F/BW/VL), 2 avx2-vnni (256-bit vpdpbusd), 1 avx2 (+FMA),
0 scalar. The float kernels have AVX-512 (levels 3-4), AVX2 (1-2) and scalar paths; the q8 kernels one integer
path per level (vpdpbusd with VNNI, vpmaddubsw + vpmaddwd without), the scalar loop only at level 0.

Entry points (same names, signatures and results as the reference, within float32 summation-order error):
- `int4_linear(x [..., K] f32, codes [N, K/2] u8, scales [N, K/g] f16, mins [N, K/g] f16, group) -> [..., N] f32`
- `int8_linear(x [..., K] f32, q [N, K] i8, scales [N] f32) -> [..., N] f32`
- `int8g_linear(x [..., K] f32, q [N, K] i8, scales [N, K/32] f16) -> [..., N] f32`: int8 codes with one float16
  scale per 32 columns (GGUF Q8_0's form, w = q * d, exact in float32); float activations, float32 accumulation.
- `int4_linear_q8(x, codes, scales, mins, group) -> [..., N] f32`: int4_linear with x rounded to int8 per
  (row, group) (dx = max|x|/127, |x - q dx| <= dx/2; min term exact) and exact integer dot products
  (VNNI, or AVX-512 BW / AVX2 maddubs); for decode (M <= 16). Matches `reference.int4_linear_q8` within float error.
- `int8_linear_q8(x, q, scales) -> [..., N] f32`: int8_linear with x rounded to int8 per (row, 32 columns)
  and exact integer dot products (as int4_linear_q8). Matches `reference.int8_linear_q8`.
- `int4_dequantize(codes, scales, mins, group, dtype=float32) -> [N, K] dtype` (bit-exact with the reference)
- `paged_decode_attention(q [B, H, D] f32, k_cache, v_cache [Hkv, NSLOTS, D] f32, slots [B, S] i64,
  n_valid [B] i64, scale) -> [B, H, D] f32`: decode attention reading K/V in place from the paged cache
  (grouped-query: head h uses kv head h // (H // Hkv); row b attends to keys j < n_valid[b]).
- `pack_nibbles`, `unpack_nibbles` (pure torch), `available()`, `backend()`, `isa_levels()`.

The first call to any of these (or to `available()`) builds/loads the C++ library once per process; call
`available()` before `torch.compile` so the build does not happen while tracing. The ops are
`torch.ops.llmspeed.{int4_linear, int4_linear_q8, int8_linear, int8_linear_q8, int8g_linear, int4_dequantize,
paged_decode_attention}` with fake
(meta) kernels registered here, so compiled graphs keep them without graph breaks. `LLMSPEED_KERNELS=0` forces the reference.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from llmspeed.kernels import build, reference
from llmspeed.kernels.reference import pack_nibbles, unpack_nibbles

__all__ = ["available", "backend", "int4_dequantize", "int4_linear", "int4_linear_q8", "int8_linear", "int8_linear_q8",
           "int8g_linear", "isa_levels", "pack_nibbles", "paged_decode_attention", "unpack_nibbles"]

# torch.ops.llmspeed.isa levels (csrc/lowbit.h IsaLevel); backend() is "cpp-" + the name of the level in use.
ISA_NAMES = {4: "avx512-vnni", 3: "avx512", 2: "avx2-vnni", 1: "avx2", 0: "scalar"}
_CPP_DEQUANT_DTYPES = (torch.float32, torch.bfloat16)

# Bound on first use: the C++ op overloads, or the reference functions.
_int4_linear: Callable[..., torch.Tensor] | None = None
_int4_linear_q8: Callable[..., torch.Tensor] | None = None
_int8_linear_q8: Callable[..., torch.Tensor] | None = None
_int8_linear: Callable[..., torch.Tensor] | None = None
_int8g_linear: Callable[..., torch.Tensor] | None = None
_int4_dequantize: Callable[..., torch.Tensor] | None = None
_paged_decode_attention: Callable[..., torch.Tensor] | None = None
_cpp = False


def _register_fakes() -> None:
    """Shape-only implementations for FakeTensor / torch.compile tracing (registered once, after loading)."""

    @torch.library.register_fake("llmspeed::int4_linear")
    def _(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, group: int) -> torch.Tensor:
        torch._check(x.dtype == torch.float32, lambda: f"llmspeed::int4_linear: x must be float32, got {x.dtype}")
        torch._check(codes.shape[1] * 2 == x.shape[-1], lambda: "llmspeed::int4_linear: codes must be [N, K/2]")
        return x.new_empty((*x.shape[:-1], codes.shape[0]))  # [..., N]

    @torch.library.register_fake("llmspeed::int4_linear_q8")
    def _(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, group: int) -> torch.Tensor:
        torch._check(x.dtype == torch.float32, lambda: f"llmspeed::int4_linear_q8: x must be float32, got {x.dtype}")
        torch._check(codes.shape[1] * 2 == x.shape[-1], lambda: "llmspeed::int4_linear_q8: codes must be [N, K/2]")
        return x.new_empty((*x.shape[:-1], codes.shape[0]))  # [..., N]

    @torch.library.register_fake("llmspeed::int8_linear_q8")
    def _(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        torch._check(x.dtype == torch.float32, lambda: f"llmspeed::int8_linear_q8: x must be float32, got {x.dtype}")
        torch._check(q.shape[1] == x.shape[-1], lambda: "llmspeed::int8_linear_q8: q must be [N, K]")
        return x.new_empty((*x.shape[:-1], q.shape[0]))  # [..., N]

    @torch.library.register_fake("llmspeed::int8_linear")
    def _(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        torch._check(x.dtype == torch.float32, lambda: f"llmspeed::int8_linear: x must be float32, got {x.dtype}")
        torch._check(q.shape[1] == x.shape[-1], lambda: "llmspeed::int8_linear: q must be [N, K]")
        return x.new_empty((*x.shape[:-1], q.shape[0]))  # [..., N]

    @torch.library.register_fake("llmspeed::int8g_linear")
    def _(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        torch._check(x.dtype == torch.float32, lambda: f"llmspeed::int8g_linear: x must be float32, got {x.dtype}")
        torch._check(q.shape[1] == x.shape[-1], lambda: "llmspeed::int8g_linear: q must be [N, K]")
        torch._check(scales.shape[1] * 32 == x.shape[-1], lambda: "llmspeed::int8g_linear: scales must be [N, K/32]")
        return x.new_empty((*x.shape[:-1], q.shape[0]))  # [..., N]

    @torch.library.register_fake("llmspeed::int4_dequantize")
    def _(codes: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, group: int, dtype: torch.dtype) -> torch.Tensor:
        return codes.new_empty((codes.shape[0], codes.shape[1] * 2), dtype=dtype)  # [N, K]

    @torch.library.register_fake("llmspeed::paged_decode_attention")
    def _(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slots: torch.Tensor, n_valid: torch.Tensor,
          scale: float) -> torch.Tensor:
        op = "llmspeed::paged_decode_attention"
        torch._check(q.dtype == torch.float32 and q.dim() == 3, lambda: f"{op}: q must be a 3-D float32 tensor")
        torch._check(k_cache.dim() == 3 and k_cache.shape[2] == q.shape[2],
                     lambda: f"{op}: cache head dim must equal q's head dim")
        torch._check(slots.dim() == 2 and slots.shape[0] == q.shape[0], lambda: f"{op}: slots must be [B, S]")
        return q.new_empty(q.shape)  # [B, H, D]


def _bind() -> None:
    """Load the C++ kernels (once) and point the entry points at them, or at the reference."""
    global _int4_linear, _int4_linear_q8, _int8_linear, _int8_linear_q8, _int8g_linear, _int4_dequantize
    global _paged_decode_attention
    global _cpp
    if _int4_linear is not None:
        return
    if build.load():
        ops = torch.ops.llmspeed
        if not getattr(_bind, "faked", False):
            _register_fakes()
            _bind.faked = True  # type: ignore[attr-defined]
        _int8_linear, _int4_dequantize, _cpp = ops.int8_linear.default, ops.int4_dequantize.default, True
        _int4_linear, _int4_linear_q8 = ops.int4_linear.default, ops.int4_linear_q8.default
        _int8_linear_q8, _paged_decode_attention = ops.int8_linear_q8.default, ops.paged_decode_attention.default
        _int8g_linear = ops.int8g_linear.default
    else:
        _int8_linear, _int4_dequantize, _cpp = reference.int8_linear, reference.int4_dequantize, False
        _int4_linear, _int4_linear_q8, _int8_linear_q8 = reference.int4_linear, _reference_q8, _reference_q8_int8
        _paged_decode_attention = reference.paged_decode_attention_ref
        _int8g_linear = _reference_int8g


def available() -> bool:
    """True when the C++ kernels are in use (builds them on the first call)."""
    _bind()
    return _cpp


def backend() -> str:
    """"cpp-avx512-vnni" / "cpp-avx512" / "cpp-avx2-vnni" / "cpp-avx2" / "cpp-scalar" (the instruction-set level
    the C++ kernels dispatch to, see ISA_NAMES) or "reference"."""
    return f"cpp-{ISA_NAMES[int(torch.ops.llmspeed.isa(-1))]}" if available() else "reference"


def isa_levels() -> dict[int, str]:
    """{level: name} of the instruction-set levels this CPU runs, highest first ({} with the reference)."""
    return {int(lv): ISA_NAMES[int(lv)] for lv in torch.ops.llmspeed.isa_levels()} if available() else {}


def int4_linear(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor,
                group: int) -> torch.Tensor:
    """x [..., K] float32 -> [..., N] float32 = x @ W^T, W [N, K] = u * scale + min (see reference.py)."""
    if _int4_linear is None:
        _bind()
    return _int4_linear(x, codes, scales, mins, group)  # type: ignore[misc]


def _reference_q8(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor,
                  group: int) -> torch.Tensor:
    """reference.int4_linear_q8 on x [..., K] -> [..., N] (the reference itself takes 2-D x)."""
    y = reference.int4_linear_q8(x.reshape(-1, x.shape[-1]), codes, scales, mins, group)  # [M, N]
    return y.reshape(*x.shape[:-1], codes.shape[0])


def _reference_q8_int8(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """reference.int8_linear_q8 on x [..., K] -> [..., N]."""
    return reference.int8_linear_q8(x.reshape(-1, x.shape[-1]), q, scales).reshape(*x.shape[:-1], q.shape[0])


def int8_linear_q8(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x [..., K] float32 -> [..., N] float32: `int8_linear` with x rounded to int8 per (row, 32 columns) (error
    per element <= max|x over its block| / 254) and exact integer dot products (VNNI / AVX-512 BW / AVX2)."""
    if _int8_linear_q8 is None:
        _bind()
    return _int8_linear_q8(x, q, scales)  # type: ignore[misc]


def int4_linear_q8(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor,
                   group: int) -> torch.Tensor:
    """x [..., K] float32 -> [..., N] float32: `int4_linear` with x rounded to int8 per (row, group) and integer
    dot products (see reference.int4_linear_q8). Faster for decode (M <= 16); activation rounding error per
    element <= max|x over its group| / 254. Needs group % 32 == 0 for the SIMD path (else a scalar loop)."""
    if _int4_linear_q8 is None:
        _bind()
    return _int4_linear_q8(x, codes, scales, mins, group)  # type: ignore[misc]


def int8_linear(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x [..., K] float32 -> [..., N] float32 = (x @ q^T) * scales."""
    if _int8_linear is None:
        _bind()
    return _int8_linear(x, q, scales)  # type: ignore[misc]


def _reference_int8g(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """reference.int8g_linear on x [..., K] -> [..., N]."""
    return reference.int8g_linear(x.reshape(-1, x.shape[-1]), q, scales).reshape(*x.shape[:-1], q.shape[0])


def int8g_linear(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x [..., K] float32 -> [..., N] float32 = x @ W^T, W [N, K] = q * scales[:, k // 32] (K % 32 == 0)."""
    if _int8g_linear is None:
        _bind()
    return _int8g_linear(x, q, scales)  # type: ignore[misc]


def int4_dequantize(codes: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, group: int,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """-> [N, K] `dtype`: u * scale + min computed in float32 and rounded once to `dtype`."""
    if _int4_dequantize is None:
        _bind()
    if _cpp and dtype not in _CPP_DEQUANT_DTYPES:  # e.g. float16: float32 in C++, one rounding here
        return _int4_dequantize(codes, scales, mins, group, torch.float32).to(dtype)  # type: ignore[misc]
    return _int4_dequantize(codes, scales, mins, group, dtype)  # type: ignore[misc]


def paged_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slots: torch.Tensor,
                           n_valid: torch.Tensor, scale: float) -> torch.Tensor:
    """q [B, H, D] float32, k_cache/v_cache [Hkv, NSLOTS, D] float32 (contiguous, head-major), slots [B, S] int64,
    n_valid [B] int64 (1 <= n_valid[b] <= S) -> [B, H, D] float32: softmax(scale q K^T) V over keys
    K/V[h // (H // Hkv), slots[b, j]] for j < n_valid[b], read in place (no gather copy). Only
    slots[b, :n_valid[b]] are read. See reference.paged_decode_attention_ref."""
    if _paged_decode_attention is None:
        _bind()
    return _paged_decode_attention(q, k_cache, v_cache, slots, n_valid, scale)  # type: ignore[misc]
