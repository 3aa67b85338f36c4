"""Quantization math: error bounds, exact grids, int4 packing."""

from __future__ import annotations

import pytest
import torch

from llmspeed.kernels import pack_nibbles, unpack_nibbles
from llmspeed.layers.quant.formats import (
    Int4Groups,
    dequantize_int8,
    int4_codes,
    quantize_int4_groups,
    quantize_int8_per_channel,
)


def test_int8_error_at_most_half_a_step() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(48, 80, generator=g) * torch.rand(48, 1, generator=g) * 3
    q, s = quantize_int8_per_channel(w)
    assert q.dtype == torch.int8 and int(q.abs().max()) <= 127
    err = (dequantize_int8(q, s) - w).abs()  # [N, K]
    assert bool((err <= s[:, None] / 2 + 1e-6).all())
    # the row maximum is on the grid: q = +-127 exactly there
    assert bool((q.abs().amax(1) == 127).all())


@pytest.mark.parametrize("group", [32, 64])
@pytest.mark.parametrize("symmetric", [True, False])
def test_int4_error_at_most_half_a_step(group: int, symmetric: bool) -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(32, 128, generator=g)
    qg = quantize_int4_groups(w, group, symmetric, param_dtype=torch.float32)
    assert int(qg.codes.min()) >= 0 and int(qg.codes.max()) <= 15
    err = (qg.dequantize() - w).abs()
    bound = qg.scales.repeat_interleave(group, 1) / 2
    assert bool((err <= bound * (1 + 1e-5) + 1e-7).all())
    if symmetric:
        assert torch.equal(qg.mins, -8 * qg.scales)  # grid (u - 8) * s


def test_int4_fp16_params_stay_close() -> None:
    """With float16 scales/mins (what is stored) the error grows only by the min's float16 rounding."""
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(2))
    for sym in (True, False):
        qg = quantize_int4_groups(w, 32, sym)  # float16 params
        assert torch.equal(qg.scales.half().float(), qg.scales) and torch.equal(qg.mins.half().float(), qg.mins)
        s = qg.scales.repeat_interleave(32, 1)
        slack = qg.mins.abs().repeat_interleave(32, 1) * 2**-11
        assert bool(((qg.dequantize() - w).abs() <= s / 2 + slack + 1e-6).all())


def test_int4_asym_exact_on_positive_grid() -> None:
    """Values on an asymmetric all-positive grid (min and max present) come back exactly; sym cannot do that."""
    g = torch.Generator().manual_seed(3)
    N, K, group = 16, 64, 32
    scale = torch.tensor(2.0**-6)
    lo = torch.tensor(0.5)  # all values in [0.5, 0.5 + 15 * scale], strictly positive
    codes = torch.randint(0, 16, (N, K), generator=g)
    codes[:, 0], codes[:, 1], codes[:, 32], codes[:, 33] = 0, 15, 0, 15  # each group spans the full range
    w = lo + codes.float() * scale
    qg = quantize_int4_groups(w, group, symmetric=False)
    assert torch.equal(qg.dequantize(), w)
    assert torch.equal(qg.codes, codes.int())
    sym = quantize_int4_groups(w, group, symmetric=True, param_dtype=torch.float32)
    assert float((sym.dequantize() - w).abs().max()) > 0  # the symmetric grid wastes its negative half


def test_int4_sym_exact_on_symmetric_grid() -> None:
    N, K = 16, 32
    q = torch.randint(-8, 8, (N, K), generator=torch.Generator().manual_seed(4))
    q[:, 0] = -8
    w = q.float() * 0.125
    qg = quantize_int4_groups(w, 32, symmetric=True)
    assert torch.equal(qg.dequantize(), w)


def test_int4_codes_given_params_round_to_nearest() -> None:
    w = torch.tensor([[0.0, 0.26, 0.74, 1.0] * 8])  # [1, 32]
    scales, mins = torch.tensor([[0.5]]), torch.tensor([[0.0]])  # grid u * 0.5
    assert int4_codes(w, scales, mins, 32)[0, :4].tolist() == [0, 1, 1, 2]


def test_int4_pack_unpack_roundtrip() -> None:
    codes = torch.randint(0, 16, (48, 128), generator=torch.Generator().manual_seed(5), dtype=torch.int32)
    packed = pack_nibbles(codes)
    assert packed.shape == (48, 64) and packed.dtype == torch.uint8
    assert torch.equal(unpack_nibbles(packed).int(), codes)
    assert int(packed[0, 0]) == int(codes[0, 0]) | (int(codes[0, 1]) << 4)  # low nibble = even column


def test_group_must_divide_k() -> None:
    with pytest.raises(ValueError, match="does not divide"):
        quantize_int4_groups(torch.randn(16, 96), 64)
    assert isinstance(quantize_int4_groups(torch.randn(16, 96), 32), Int4Groups)
