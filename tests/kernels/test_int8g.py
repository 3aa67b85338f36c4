"""llmspeed::int8g_linear (int8 codes, one float16 scale per 32 columns: GGUF Q8_0's form) vs the pure-torch
reference on every instruction-set level this CPU runs (conftest's `isa`).

Tolerance as for the other float kernels (test_lowbit.py): |y - y_ref| <= 1e-5 * (|x| @ |W|^T) elementwise. The
kernel decodes w = q * d exactly (8-bit codes times an 11-bit mantissa fit float32), so only the float32
summation order differs from a float32 GEMM on the dequantized weight.
"""

from __future__ import annotations

import pytest
import torch

from llmspeed import kernels
from llmspeed.kernels import build, reference

RTOL = 1e-5


@pytest.fixture(scope="module")
def ops():
    assert kernels.available(), f"C++ kernels failed to build/load: {build.status()}"
    return torch.ops.llmspeed


def _int8g(n: int, k: int, seed: int = 0, extreme: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if extreme:  # every code at the ends of the int8 range, both signs
        q = torch.where(torch.rand(n, k, generator=g) < 0.5, -128, 127).to(torch.int8)
    else:
        q = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int8)  # [N, K]
    d = (torch.rand(n, k // 32, generator=g) * 0.02 + 1e-4).half()  # [N, K/32]
    return q, d


def _check(x: torch.Tensor, q: torch.Tensor, d: torch.Tensor) -> None:
    w = reference.int8g_dequantize(q, d)  # [N, K]
    ref = reference.int8g_linear(x, q, d)  # [M, N]
    y = kernels.int8g_linear(x, q, d)
    bound = x.abs() @ w.abs().t()
    assert y.shape == ref.shape and y.dtype == torch.float32
    err = (y - ref).abs()
    assert bool((err <= RTOL * bound + 1e-30).all()), f"max rel err {(err / bound.clamp_min(1e-30)).max():.3g}"


@pytest.mark.parametrize(("n", "k"), [(1, 32), (7, 32), (33, 64), (17, 96), (9, 576), (31, 1536)])
def test_int8g_linear_matches_reference(isa: int, n: int, k: int) -> None:
    """Every row-tile remainder (M = 1..17: 8-row AVX-512 and 4-row AVX2 tiles, two groups in flight at M <= 2,
    odd group counts), odd N."""
    q, d = _int8g(n, k, seed=n * 1000 + k)
    x = torch.randn(17, k, generator=torch.Generator().manual_seed(k))  # [17, K]
    for m in range(1, 18):
        _check(x[:m].contiguous(), q, d)


def test_int8g_extreme_codes(isa: int) -> None:
    q, d = _int8g(19, 576, extreme=True)
    _check(torch.randn(5, 576), q, d)


def test_int8g_weights_are_exact(isa: int) -> None:
    """Against a float64 GEMM on the dequantized weight: the kernel's weights are q * d exactly, so its error is
    float32 summation alone (the same bound as a float32 GEMM: a few ulp of sum |x w| times sqrt(K))."""
    q, d = _int8g(41, 576, seed=3)
    x = torch.randn(3, 576, generator=torch.Generator().manual_seed(3))
    w64 = q.double() * d.double().repeat_interleave(32, dim=1)  # [N, K], exact
    assert torch.equal(reference.int8g_dequantize(q, d).double(), w64)
    exact = x.double() @ w64.t()
    bound = (x.abs().double() @ w64.abs().t())
    assert bool(((kernels.int8g_linear(x, q, d).double() - exact).abs() <= RTOL * bound).all())


def test_int8g_leading_dims_noncontiguous_and_empty(ops) -> None:
    q, d = _int8g(13, 64)
    x = torch.randn(2, 3, 128)[..., ::2]  # [2, 3, 64], non-contiguous
    y = kernels.int8g_linear(x, q, d)  # [2, 3, 13]
    assert y.shape == (2, 3, 13)
    _check(x.reshape(-1, 64).contiguous(), q, d)
    torch.testing.assert_close(y.reshape(-1, 13), reference.int8g_linear(x.reshape(-1, 64), q, d), rtol=1e-5, atol=1e-5)
    assert kernels.int8g_linear(torch.randn(0, 64), q, d).shape == (0, 13)
    # the weights need not be contiguous either (a transposed-back view)
    _check(torch.randn(4, 64), q.t().contiguous().t(), d.t().contiguous().t())


def test_int8g_bad_inputs_raise_clear_errors(ops) -> None:
    q, d = _int8g(8, 64)
    with pytest.raises(RuntimeError, match="x must be a float32"):
        kernels.int8g_linear(torch.randn(2, 64, dtype=torch.float64), q, d)
    with pytest.raises(RuntimeError, match="K must be a positive multiple of 32"):
        kernels.int8g_linear(torch.randn(2, 48), torch.zeros(8, 48, dtype=torch.int8), torch.ones(8, 1).half())
    with pytest.raises(RuntimeError, match="q must be an int8"):
        kernels.int8g_linear(torch.randn(2, 64), q.to(torch.uint8), d)
    with pytest.raises(RuntimeError, match="scales must be a float16"):
        kernels.int8g_linear(torch.randn(2, 64), q, d.float())
    with pytest.raises(RuntimeError, match=r"scales must be a float16 tensor \[N, K/32\]"):
        kernels.int8g_linear(torch.randn(2, 64), q, d[:, :1].contiguous())


def test_int8g_torch_compile_fullgraph(ops) -> None:
    q, d = _int8g(33, 128)

    def f(x: torch.Tensor) -> torch.Tensor:  # [M, 128] -> [M, 33]
        return kernels.int8g_linear(x, q, d) * 2.0

    x = torch.randn(4, 128)
    torch.testing.assert_close(torch.compile(f, fullgraph=True)(x), f(x), rtol=1e-5, atol=1e-5)
