"""llmspeed::int4_linear_q8 (int4 weights x int8-per-group activations, integer dot products) on every ISA path.

Two checks per case:
- vs its own reference (reference.int4_linear_q8): |y - y_ref| <= 1e-5 * (|x| @ |W|^T). The rounded activations
  are bit-identical (same float ops), the integer sums are exact, so only the float epilogue's summation order
  differs.
- vs the exact float int4_linear: the activation rounding error is at most dx/2 = max|x_group| / 254 per element,
  and the min term uses the row sums of the ROUNDED x, so y_q8 = sum_k x_hat_k w_k and
  |y_q8 - y| <= sum_g dx[m,g]/2 * sum_{k in g} |w[n,k]| + 1e-5 * (|x| @ |W|^T).
"""

from __future__ import annotations

import pytest
import torch

from llmspeed import kernels
from llmspeed.kernels import reference

RTOL = 1e-5


def _int4(n: int, k: int, group: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    u = torch.randint(0, 16, (n, k), generator=g)  # [N, K]
    scales = (torch.rand(n, k // group, generator=g) * 0.05 + 0.001).half()  # [N, K/g]
    mins = (torch.randn(n, k // group, generator=g) * 0.2).half()
    return u, reference.pack_nibbles(u), scales, mins


def _check(x: torch.Tensor, u: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor,
           group: int) -> None:
    y = kernels.int4_linear_q8(x, codes, scales, mins, group)  # [M, N]
    w = reference.int4_dequantize(codes, scales, mins, group)  # [N, K]
    fp_bound = x.abs() @ w.abs().t()  # [M, N]
    ref = reference.int4_linear_q8(x, codes, scales, mins, group)
    assert y.shape == ref.shape and y.dtype == torch.float32
    err = (y - ref).abs()
    assert bool((err <= RTOL * fp_bound + 1e-30).all()), f"vs q8 reference: {(err / fp_bound).max():.3g}"
    _, dx, _ = reference.quantize_q8(x, group)  # [M, G]
    # xsum comes from the rounded activations, so y = sum_k x_hat_k w_k: error <= sum_g dx_g / 2 * sum_{k in g} |w_k|
    round_bound = (dx / 2) @ w.abs().reshape(u.shape[0], -1, group).sum(-1).t()  # [M, N]
    exact = reference.int4_linear(x, codes, scales, mins, group)
    assert bool(((y - exact).abs() <= round_bound + RTOL * fp_bound + 1e-30).all())


@pytest.mark.parametrize("m", [1, 3, 8, 12, 17])  # 12: a 9..16-row tile (stack accumulators)
@pytest.mark.parametrize("group", [32, 64, 128])
@pytest.mark.parametrize("kmul", [1, 3, 0])  # K = group, 3 * group, 576 (kmul 0)
@pytest.mark.parametrize("n", [7, 33])
def test_q8_matches_references(isa: int, m: int, group: int, kmul: int, n: int) -> None:
    k = group * kmul if kmul else 576
    if k % group:
        pytest.skip("576 is not a multiple of 128")
    u, codes, scales, mins = _int4(n, k, group, seed=m * 1000 + n + k)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)) * torch.rand(k) * 3  # [M, K] uneven ranges
    _check(x, u, codes, scales, mins, group)


@pytest.mark.parametrize("group", [16, 48])
def test_q8_groups_not_multiple_of_32(isa: int, group: int) -> None:  # scalar fallback inside the op
    u, codes, scales, mins = _int4(9, 3 * group, group)
    _check(torch.randn(5, 3 * group), u, codes, scales, mins, group)


def test_q8_zero_and_outlier_groups(isa: int) -> None:
    u, codes, scales, mins = _int4(17, 128, 32)
    x = torch.randn(4, 128)
    x[0, :32] = 0.0  # dx = 0 group
    x[1, 40] = 1000.0  # one outlier dominates its group's dx
    x[2] = -x[2].abs()
    _check(x, u, codes, scales, mins, 32)


def test_q8_leading_dims_noncontiguous_and_compile() -> None:
    _, codes, scales, mins = _int4(33, 128, 32)
    x = torch.randn(2, 3, 256)[..., ::2]  # [2, 3, 128], non-contiguous
    y = kernels.int4_linear_q8(x, codes, scales, mins, 32)  # [2, 3, 33]
    assert y.shape == (2, 3, 33)
    torch.testing.assert_close(y.reshape(6, 33), kernels.int4_linear_q8(x.reshape(6, 128), codes, scales, mins, 32))
    compiled = torch.compile(lambda t: kernels.int4_linear_q8(t, codes, scales, mins, 32) * 2, fullgraph=True)
    torch.testing.assert_close(compiled(x), y * 2)


def test_q8_bad_inputs_raise() -> None:
    _, codes, scales, mins = _int4(8, 64, 32)
    with pytest.raises(RuntimeError, match="x must be a float32"):
        kernels.int4_linear_q8(torch.randn(2, 64, dtype=torch.float64), codes, scales, mins, 32)
    with pytest.raises(RuntimeError, match="group must be a positive multiple of 16"):
        kernels.int4_linear_q8(torch.randn(2, 64), codes, scales, mins, 24)
    with pytest.raises(RuntimeError, match="scales must be float16"):
        kernels.int4_linear_q8(torch.randn(2, 64), codes, scales.float(), mins, 32)


@pytest.mark.parametrize("m", [1, 3, 8, 17])
@pytest.mark.parametrize(("n", "k"), [(7, 1), (33, 5), (9, 33), (33, 576), (7, 1536), (17, 47), (33, 80)])
def test_int8_q8_matches_references(isa: int, m: int, n: int, k: int) -> None:
    """Same two bounds as int4 (32-column activation blocks, weights q * scale)."""
    g = torch.Generator().manual_seed(m * 100 + k)
    q = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int8)  # [N, K], including -128
    scales = torch.rand(n, generator=g) * 0.01 + 1e-4  # [N]
    x = torch.randn(m, k, generator=g) * torch.rand(k, generator=g) * 3  # [M, K]
    y = kernels.int8_linear_q8(x, q, scales)  # [M, N]
    w = q.float().abs() * scales[:, None]  # [N, K] |W|
    fp_bound = x.abs() @ w.t()
    err = (y - reference.int8_linear_q8(x, q, scales)).abs()
    assert y.shape == (m, n) and bool((err <= RTOL * fp_bound + 1e-30).all()), f"{(err / fp_bound).max():.3g}"
    k32 = -(-k // 32) * 32
    _, dx, _ = reference.quantize_q8(torch.nn.functional.pad(x, (0, k32 - k)), 32)  # [M, G]
    wb = torch.nn.functional.pad(w, (0, k32 - k)).reshape(n, -1, 32).sum(-1)  # [N, G]
    exact = reference.int8_linear(x, q, scales)
    assert bool(((y - exact).abs() <= (dx / 2) @ wb.t() + RTOL * fp_bound + 1e-30).all())


def test_int8_q8_compile_and_leading_dims() -> None:
    q = torch.randint(-127, 128, (33, 96), dtype=torch.int8)
    s = torch.rand(33)
    x = torch.randn(2, 3, 96)
    y = kernels.int8_linear_q8(x, q, s)  # [2, 3, 33]
    torch.testing.assert_close(y.reshape(6, 33), kernels.int8_linear_q8(x.reshape(6, 96), q, s))
    compiled = torch.compile(lambda t: kernels.int8_linear_q8(t, q, s) + 1, fullgraph=True)
    torch.testing.assert_close(compiled(x), y + 1)
