"""llmspeed's C++ paged decode attention vs the pure-torch reference (gather + masked softmax + matmul).

Tolerance: max |out - out_ref| <= 1e-5 * max |out_ref| per call (float32 dot products of length D <= 64 and
softmax-weighted sums over S <= 130 keys in a different order, plus the AVX-512 polynomial exp (~1e-7 relative),
stay around 1e-7; 1e-5 catches any wrong slot, head mapping or mask). If the C++ build fails, these tests fail.
"""

from __future__ import annotations

import pytest
import torch

from llmspeed import kernels
from llmspeed.kernels import reference

RTOL = 1e-5


def isa_levels(levels: list[int]) -> list[int]:  # the op has AVX-512 (levels >= 3) and scalar paths (conftest's `isa`)
    return [levels[0], 0] if levels[0] > 0 else [0]


def _case(b: int, h: int, hkv: int, d: int, s: int, seed: int = 0, nslots: int | None = None):
    """Random q, caches and slot tables: each row's slots are a random permutation drawn from a larger slot
    range (scattered, like real block tables); n_valid random in [1, S] per row."""
    g = torch.Generator().manual_seed(seed)
    nslots = nslots or 4 * s * b + 7
    q = torch.randn(b, h, d, generator=g)  # [B, H, D]
    k = torch.randn(hkv, nslots, d, generator=g)  # [Hkv, NSLOTS, D]
    v = torch.randn(hkv, nslots, d, generator=g)
    slots = torch.stack([torch.randperm(nslots, generator=g)[:s] for _ in range(b)])  # [B, S] int64
    n_valid = torch.randint(1, s + 1, (b,), generator=g)  # [B]
    return q, k, v, slots, n_valid


def _check(q, k, v, slots, n_valid, scale) -> torch.Tensor:
    y = kernels.paged_decode_attention(q, k, v, slots, n_valid, scale)
    ref = reference.paged_decode_attention_ref(q, k, v, slots, n_valid, scale)
    assert y.shape == ref.shape == q.shape and y.dtype == torch.float32
    err = (y - ref).abs().max().item()
    bound = RTOL * ref.abs().max().item()
    assert err <= bound, f"max abs err {err:.3g} > {bound:.3g}"
    return y


@pytest.mark.parametrize("b", [1, 3, 8])
@pytest.mark.parametrize(("h", "hkv"), [(9, 3), (4, 4), (8, 2)])
@pytest.mark.parametrize("d", [64, 48, 17])
@pytest.mark.parametrize("s", [1, 16, 130])
def test_matches_reference(isa: int, b: int, h: int, hkv: int, d: int, s: int) -> None:
    q, k, v, slots, n_valid = _case(b, h, hkv, d, s, seed=b * 1000 + h * 100 + d + s)
    _check(q, k, v, slots, n_valid, d ** -0.5)


def test_n_valid_one_is_v_of_first_slot(isa: int) -> None:
    q, k, v, slots, _ = _case(4, 9, 3, 64, 40)
    n_valid = torch.ones(4, dtype=torch.int64)
    slots[:, 1:] = -1  # padding beyond n_valid is never read
    y = kernels.paged_decode_attention(q, k, v, slots, n_valid, 0.125)
    expect = v[:, slots[:, 0]].transpose(0, 1).repeat_interleave(3, dim=1)  # [B, H, D]: V of the one key
    torch.testing.assert_close(y, expect, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(y, reference.paged_decode_attention_ref(q, k, v, slots, n_valid, 0.125))


def test_large_scores_stable(isa: int) -> None:  # subtract-max softmax: no inf/nan at big logits
    q, k, v, slots, n_valid = _case(3, 8, 2, 48, 130, seed=5)
    _check(q * 30, k, v, slots, n_valid, 1.0)


def test_torch_compile_fullgraph() -> None:
    q, k, v, slots, n_valid = _case(3, 9, 3, 64, 16)

    def f(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return kernels.paged_decode_attention(q * 2, k, v, slots, n_valid, 0.125) + 1

    compiled = torch.compile(f, fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), f(q, k, v))


def test_bad_inputs_raise_clear_errors() -> None:
    q, k, v, slots, n_valid = _case(2, 4, 2, 16, 8)
    op = kernels.paged_decode_attention
    with pytest.raises(RuntimeError, match="q must be a 3-D float32"):
        op(q.double(), k, v, slots, n_valid, 0.25)
    with pytest.raises(RuntimeError, match="k_cache must be a 3-D float32"):
        op(q, k.half(), v, slots, n_valid, 0.25)
    with pytest.raises(RuntimeError, match="must have the same shape"):
        op(q, k, v[:1], slots, n_valid, 0.25)
    with pytest.raises(RuntimeError, match="head dim"):
        op(q, k[..., :8].contiguous(), v[..., :8].contiguous(), slots, n_valid, 0.25)
    with pytest.raises(RuntimeError, match="must be contiguous"):
        op(q, k.transpose(0, 1).contiguous().transpose(0, 1), v, slots, n_valid, 0.25)
    with pytest.raises(RuntimeError, match="must be a multiple of kv heads"):
        op(torch.randn(2, 3, 16), k, v, slots, n_valid, 0.25)
    with pytest.raises(RuntimeError, match="slots must be an int64"):
        op(q, k, v, slots.int(), n_valid, 0.25)
    with pytest.raises(RuntimeError, match="n_valid must be an int64"):
        op(q, k, v, slots, n_valid[:1], 0.25)
    with pytest.raises(RuntimeError, match=r"n_valid\[1\] = 0 must be in \[1, S = 8\]"):
        op(q, k, v, slots, torch.tensor([3, 0]), 0.25)
    with pytest.raises(RuntimeError, match=r"n_valid\[0\] = 9"):
        op(q, k, v, slots, torch.tensor([9, 1]), 0.25)
    bad = slots.clone()
    bad[1, 0] = k.shape[1]
    with pytest.raises(RuntimeError, match=r"slots\[1, 0\] = .* out of range"):
        op(q, k, v, bad, n_valid, 0.25)
