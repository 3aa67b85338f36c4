"""llmspeed's C++ low-bit kernels vs the pure-torch reference, on every ISA path this CPU can run.

Tolerance for the linears: |y - y_ref| <= 1e-5 * (|x| @ |W|^T) elementwise, i.e. relative to the sum of
|x_k| |w_nk| (float32 summation in a different order and fma vs mul+add give errors of a few ulp of that
sum times sqrt(K); 1e-5 leaves ample margin for K <= 1536 while catching any wrong column or scale).
Dequantize must be bit-exact. If the C++ build fails here, these tests fail (they do not skip).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch

from llmspeed import kernels
from llmspeed.kernels import build, reference

RTOL = 1e-5
FLOAT_PATHS = ((4, 3), (2, 1), (0,))  # levels sharing one float path: AVX-512, AVX2+FMA, scalar


def isa_levels(levels: list[int]) -> list[int]:
    """One level per float-kernel path (the levels within a path differ only in the q8 kernels: test_int4_q8.py)."""
    return [next(lv for lv in path if lv in levels) for path in FLOAT_PATHS if any(lv in levels for lv in path)]


@pytest.fixture(scope="module")
def ops():
    assert kernels.available(), f"C++ kernels failed to build/load: {build.status()}"
    return torch.ops.llmspeed


def _int4(n: int, k: int, group: int, codes: str = "random", seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    if codes == "random":
        u = torch.randint(0, 16, (n, k), generator=g)  # [N, K]
    else:
        u = torch.full((n, k), 0 if codes == "zeros" else 15)
    scales = (torch.rand(n, k // group, generator=g) * 0.05 + 0.001).half()  # [N, K/g]
    mins = (torch.randn(n, k // group, generator=g) * 0.2).half()
    return reference.pack_nibbles(u), scales, mins


def _assert_close(y: torch.Tensor, ref: torch.Tensor, bound: torch.Tensor) -> None:
    err = (y - ref).abs()
    assert y.shape == ref.shape and y.dtype == torch.float32
    assert bool((err <= RTOL * bound + 1e-30).all()), f"max rel err {(err / bound.clamp_min(1e-30)).max():.3g}"


@pytest.mark.parametrize("m", [1, 3, 8, 17])
@pytest.mark.parametrize(("n", "k", "group"), [(7, 32, 32), (33, 96, 32), (5, 64, 64), (33, 192, 64), (9, 128, 128),
                                               (33, 384, 128), (7, 576, 32), (33, 576, 64), (5, 48, 16), (3, 144, 48)])
def test_int4_linear_matches_reference(isa: int, m: int, n: int, k: int, group: int) -> None:
    codes, scales, mins = _int4(n, k, group, seed=m * 1000 + n)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m))  # [M, K]
    w = reference.int4_dequantize(codes, scales, mins, group)  # [N, K]
    _assert_close(kernels.int4_linear(x, codes, scales, mins, group), reference.int4_linear(x, codes, scales, mins, group),
                  x.abs() @ w.abs().t())


@pytest.mark.parametrize("codes", ["zeros", "fifteens"])
def test_int4_extreme_codes(isa: int, codes: str) -> None:
    c, scales, mins = _int4(33, 576, 32, codes=codes)
    x = torch.randn(8, 576)
    w = reference.int4_dequantize(c, scales, mins, 32)
    _assert_close(kernels.int4_linear(x, c, scales, mins, 32), reference.int4_linear(x, c, scales, mins, 32),
                  x.abs() @ w.abs().t())


@pytest.mark.parametrize("m", [1, 3, 8, 17])
@pytest.mark.parametrize(("n", "k"), [(7, 1), (33, 5), (9, 33), (33, 576), (7, 1536), (5, 47)])
def test_int8_linear_matches_reference(isa: int, m: int, n: int, k: int) -> None:
    g = torch.Generator().manual_seed(m * 100 + k)
    q = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)  # [N, K]
    scales = torch.rand(n, generator=g) * 0.01 + 1e-4  # [N]
    x = torch.randn(m, k, generator=g)  # [M, K]
    _assert_close(kernels.int8_linear(x, q, scales), reference.int8_linear(x, q, scales),
                  (x.abs() @ q.float().abs().t()) * scales)


def test_leading_dims_and_noncontiguous(ops) -> None:
    codes, scales, mins = _int4(33, 128, 32)
    x = torch.randn(2, 3, 256)[..., ::2]  # [2, 3, 128], non-contiguous
    y = kernels.int4_linear(x, codes, scales, mins, 32)  # [2, 3, 33]
    ref = reference.int4_linear(x.reshape(-1, 128), codes, scales, mins, 32).reshape(2, 3, 33)
    w = reference.int4_dequantize(codes, scales, mins, 32)
    _assert_close(y.reshape(-1, 33), ref.reshape(-1, 33), x.reshape(-1, 128).abs() @ w.abs().t())


@pytest.mark.parametrize(("n", "k", "group"), [(7, 32, 32), (33, 576, 64), (9, 384, 128), (5, 48, 16)])
def test_int4_dequantize_bit_exact(isa: int, n: int, k: int, group: int) -> None:
    codes, scales, mins = _int4(n, k, group)
    ref = reference.int4_dequantize(codes, scales, mins, group)  # [N, K] float32
    assert torch.equal(kernels.int4_dequantize(codes, scales, mins, group), ref)
    assert torch.equal(kernels.int4_dequantize(codes, scales, mins, group, torch.bfloat16), ref.bfloat16())
    assert torch.equal(kernels.int4_dequantize(codes, scales, mins, group, torch.float16), ref.half())


def test_torch_compile_fullgraph(ops) -> None:
    codes, scales, mins = _int4(33, 128, 32)
    q = torch.randint(-127, 128, (33, 128), dtype=torch.int8)
    s8 = torch.rand(33)

    def f(x: torch.Tensor) -> torch.Tensor:  # [M, 128] -> [M, 33]
        y = kernels.int4_linear(x, codes, scales, mins, 32) + torch.ops.llmspeed.int8_linear(x, q, s8)
        w = kernels.int4_dequantize(codes, scales, mins, 32, torch.bfloat16)  # [33, 128]
        return y + x @ w.float().t()

    x = torch.randn(4, 128)
    compiled = torch.compile(f, fullgraph=True)
    torch.testing.assert_close(compiled(x), f(x), rtol=1e-5, atol=1e-4)


def test_bad_inputs_raise_clear_errors(ops) -> None:
    codes, scales, mins = _int4(8, 64, 32)
    with pytest.raises(RuntimeError, match="x must be a float32"):
        kernels.int4_linear(torch.randn(2, 64, dtype=torch.float64), codes, scales, mins, 32)
    with pytest.raises(RuntimeError, match="scales must be float16"):
        kernels.int4_linear(torch.randn(2, 64), codes, scales.float(), mins, 32)
    with pytest.raises(RuntimeError, match="group must be a positive multiple of 16"):
        kernels.int4_linear(torch.randn(2, 64), codes, scales, mins, 24)
    with pytest.raises(RuntimeError, match=r"codes .* must be \[N, K/2\]"):
        kernels.int4_linear(torch.randn(2, 96), codes, scales, mins, 32)
    with pytest.raises(RuntimeError, match="q must be an int8"):
        kernels.int8_linear(torch.randn(2, 64), torch.zeros(8, 64, dtype=torch.uint8), torch.ones(8))
    with pytest.raises(RuntimeError, match="scales must be a float32"):
        kernels.int8_linear(torch.randn(2, 64), torch.zeros(8, 64, dtype=torch.int8), torch.ones(8).half())


def _cpu_flags() -> set[str]:
    if not os.path.exists("/proc/cpuinfo"):
        return set()
    for line in open("/proc/cpuinfo"):
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def test_isa_levels_follow_cpu_flags(ops) -> None:
    """The levels the C++ side offers are exactly those /proc/cpuinfo allows, and the default is the highest: the
    dispatcher never settles for the scalar loop (or a lower vector path) on a CPU that runs a better one."""
    flags = _cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags")
    avx2 = {"avx2", "fma", "f16c"} <= flags
    avx512 = avx2 and {"avx512f", "avx512bw", "avx512vl"} <= flags
    vnni512 = avx512 and "avx512_vnni" in flags
    expected = [lv for lv, ok in [(4, vnni512), (3, avx512), (2, avx2 and ("avx_vnni" in flags or vnni512)),
                                  (1, avx2), (0, True)] if ok]
    assert list(kernels.isa_levels()) == expected
    assert int(ops.isa(-1)) == expected[0]
    assert kernels.backend() == f"cpp-{kernels.ISA_NAMES[expected[0]]}"


def test_isa_forcing_falls_back_to_the_best_level_below(ops) -> None:
    levels = list(kernels.isa_levels())
    top = int(ops.isa(-1))
    try:
        for want in range(6):
            got = int(ops.isa(want))
            assert got == max(lv for lv in levels if lv <= want), (want, got)
            assert int(ops.isa(-1)) == got and kernels.backend() == f"cpp-{kernels.ISA_NAMES[got]}"
    finally:
        ops.isa(top)
    assert int(ops.isa(-1)) == top


def test_env_zero_forces_reference() -> None:
    code = ("from llmspeed import kernels; import torch; "
            "y = kernels.int8_linear(torch.ones(1, 4), torch.ones(2, 4, dtype=torch.int8), torch.ones(2)); "
            "print(kernels.backend(), y.tolist())")
    env = {**os.environ, "LLMSPEED_KERNELS": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split()[0] == "reference"
    assert "[[4.0, 4.0]]" in out.stdout


def test_build_failure_warns_once_and_falls_back(monkeypatch, tmp_path, caplog) -> None:
    monkeypatch.setattr(build, "_state", {})
    monkeypatch.setattr(build, "build_dir", lambda: tmp_path / "kernels")

    def boom(directory):
        raise RuntimeError("ninja: build stopped\nlowbit.cpp:1:1: error: something broke\nmore noise")

    monkeypatch.setattr(build, "_compile", boom)
    with caplog.at_level(logging.INFO, logger="llmspeed.kernels.build"):
        assert build.load() is False
        assert build.load() is False  # cached: no second attempt, no second warning
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "error: something broke" in warnings[0].getMessage()
    assert sum("building llmspeed CPU kernels" in r.getMessage() for r in caplog.records) == 1
