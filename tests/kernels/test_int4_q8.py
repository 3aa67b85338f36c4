"""llmspeed::int4_linear_q8 / int8_linear_q8 (int4 or int8 weights x int8-per-group activations, integer dot
products) on every instruction-set level this CPU runs (conftest's `isa`: VNNI, AVX-512 BW and AVX2 maddubs, scalar).

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


# Each level's own kernels (torch.ops.llmspeed.q8_path), so that a forced level cannot silently run another path.
Q8_PATHS = {4: ("avx512-vnni",), 3: ("avx512",), 2: ("avx2-vnni", "avx2-vnni-evex"), 1: ("avx2",), 0: ("scalar",)}
MS = range(1, 18)  # every row-tile remainder: 256-bit tiles take 4 rows, 512-bit 8 (int8) or 16 (int4, 9+ on the stack)


def test_forced_level_runs_its_own_q8_path(isa: int) -> None:
    assert torch.ops.llmspeed.q8_path() in Q8_PATHS[isa]


def _check(x: torch.Tensor, u: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor,
           group: int, ms: range | None = None) -> None:
    """The kernel on x[:m] for each m in `ms` (default: all rows at once) against both bounds (rows are independent:
    the references are computed once, on all of x)."""
    w = reference.int4_dequantize(codes, scales, mins, group)  # [N, K]
    fp_bound = x.abs() @ w.abs().t()  # [M, N]
    ref = reference.int4_linear_q8(x, codes, scales, mins, group)
    _, dx, _ = reference.quantize_q8(x, group)  # [M, G]
    # xsum comes from the rounded activations, so y = sum_k x_hat_k w_k: error <= sum_g dx_g / 2 * sum_{k in g} |w_k|
    round_bound = (dx / 2) @ w.abs().reshape(u.shape[0], -1, group).sum(-1).t()  # [M, N]
    exact = reference.int4_linear(x, codes, scales, mins, group)
    for m in ms or [x.shape[0]]:
        y = kernels.int4_linear_q8(x[:m], codes, scales, mins, group)  # [m, N]
        assert y.shape == (m, ref.shape[1]) and y.dtype == torch.float32
        err = (y - ref[:m]).abs()
        assert bool((err <= RTOL * fp_bound[:m] + 1e-30).all()), f"M={m} vs q8 reference: {(err / fp_bound[:m]).max():.3g}"
        assert bool(((y - exact[:m]).abs() <= round_bound[:m] + RTOL * fp_bound[:m] + 1e-30).all()), f"M={m} vs exact"


@pytest.mark.parametrize("group", [32, 64, 128])
@pytest.mark.parametrize("kmul", [1, 3, 0])  # K = group, 3 * group, 576 (kmul 0)
@pytest.mark.parametrize("n", [7, 16, 33])  # tails of 8- and 16-row tiles, an exact tile, a 1-row last tile
def test_q8_matches_references(isa: int, group: int, kmul: int, n: int) -> None:
    k = group * kmul if kmul else 576
    if k % group:
        pytest.skip("576 is not a multiple of 128")
    u, codes, scales, mins = _int4(n, k, group, seed=n + k)
    x = torch.randn(MS[-1], k, generator=torch.Generator().manual_seed(k)) * torch.rand(k) * 3  # [M, K] uneven ranges
    _check(x, u, codes, scales, mins, group, MS)


def test_q8_extremes_cannot_saturate(isa: int) -> None:
    """The largest int16 partial sums of the maddubs paths: codes 15 (or 0) x activations +-127 everywhere (every
    x of a group equal in magnitude rounds to +-127), both signs, K up to 4 blocks of 32 per group."""
    n, k, group = 17, 256, 128
    for code in (15, 0):
        u = torch.full((n, k), code)
        u[::2, :64] = 15 - code  # rows and column blocks with the other extreme
        codes = reference.pack_nibbles(u)
        scales = torch.full((n, k // group), 0.01).half()
        mins = torch.full((n, k // group), -0.07).half()
        x = torch.full((5, k), 2.5)
        x[1], x[2, ::2], x[3, 100:] = -2.5, -2.5, -2.5  # all negative, alternating signs, a sign change mid-group
        x[4] *= torch.linspace(1, 3, k)  # not all +-127: the exact rounding path next to the extremes
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


def _check_int8(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor, ms: range | None = None) -> None:
    """Same two bounds as int4 (32-column activation blocks, weights q * scale), on x[:m] for each m in `ms`."""
    k, n = x.shape[1], q.shape[0]
    w = q.float().abs() * scales[:, None]  # [N, K] |W|
    fp_bound = x.abs() @ w.t()  # [M, N]
    ref = reference.int8_linear_q8(x, q, scales)
    k32 = -(-k // 32) * 32
    _, dx, _ = reference.quantize_q8(torch.nn.functional.pad(x, (0, k32 - k)), 32)  # [M, G]
    wb = torch.nn.functional.pad(w, (0, k32 - k)).reshape(n, -1, 32).sum(-1)  # [N, G]
    round_bound = (dx / 2) @ wb.t() + RTOL * fp_bound + 1e-30
    exact = reference.int8_linear(x, q, scales)
    for m in ms or [x.shape[0]]:
        y = kernels.int8_linear_q8(x[:m], q, scales)  # [m, N]
        err = (y - ref[:m]).abs()
        assert y.shape == (m, n) and bool((err <= RTOL * fp_bound[:m] + 1e-30).all()), \
            f"M={m}: {(err / fp_bound[:m]).max():.3g}"
        assert bool(((y - exact[:m]).abs() <= round_bound[:m]).all()), f"M={m} vs exact"


@pytest.mark.parametrize(("n", "k"), [(7, 1), (33, 5), (9, 33), (16, 64), (33, 576), (7, 1536), (17, 47), (33, 80)])
def test_int8_q8_matches_references(isa: int, n: int, k: int) -> None:
    g = torch.Generator().manual_seed(n * 100 + k)
    q = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int8)  # [N, K], including -128
    scales = torch.rand(n, generator=g) * 0.01 + 1e-4  # [N]
    x = torch.randn(MS[-1], k, generator=g) * torch.rand(k, generator=g) * 3  # [M, K]
    _check_int8(x, q, scales, MS)


def test_int8_q8_extremes_cannot_saturate(isa: int) -> None:
    """The maddubs path's worst pair: |w| = 128 (w = -128, the unsigned operand) x |q| = 127, same or opposite
    signs (2 * 128 * 127 = 32512, just under int16's 32767), and 127 x 127, over whole blocks and a ragged tail."""
    n, k = 9, 70
    q = torch.full((n, k), -128, dtype=torch.int8)
    q[1], q[2, ::2], q[3, 40:] = 127, 127, 0
    q[4] = torch.tensor([-128, 127], dtype=torch.int8).repeat(k // 2)
    x = torch.full((4, k), 1.5)
    x[1], x[2, 1::2] = -1.5, -1.5  # every |q| = 127: both sign combinations with every weight
    x[3] *= torch.linspace(-1, 1, k)
    _check_int8(x, q, torch.rand(n) + 0.5)


def test_int8_q8_compile_and_leading_dims() -> None:
    q = torch.randint(-127, 128, (33, 96), dtype=torch.int8)
    s = torch.rand(33)
    x = torch.randn(2, 3, 96)
    y = kernels.int8_linear_q8(x, q, s)  # [2, 3, 33]
    torch.testing.assert_close(y.reshape(6, 33), kernels.int8_linear_q8(x.reshape(6, 96), q, s))
    compiled = torch.compile(lambda t: kernels.int8_linear_q8(t, q, s) + 1, fullgraph=True)
    torch.testing.assert_close(compiled(x), y + 1)
