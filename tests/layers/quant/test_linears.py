"""Quantized linears vs a float32 reference on their own dequantized weights (stated tolerances)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llmspeed.layers.quant import int8 as int8_mod
from llmspeed.layers.quant.int4 import Int4Linear
from llmspeed.layers.quant.int8 import Int8Linear
from llmspeed.layers.quant.plan import ExecPlan


def _lin(k: int, n: int, bias: bool = True, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(k, n, bias=bias).requires_grad_(False)


def _rel(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y - ref).norm() / ref.norm())


# bf16 activations (8-bit mantissa): relative error ~2^-9 per element, ~1e-2 worst case on a matmul
BF16_TOL = 1.5e-2
FP32_TOL = 1e-5  # float32 GEMMs: summation order only
# decode kernels round activations to int8 per 32 columns (dx = max|x| / 127, error <= dx / 2 per element):
# ~2e-3 relative on random data (tests/kernels state the element-wise bound)
Q8_TOL = 1e-2


@pytest.mark.parametrize("m", [1, 3, 40])  # 2 x 1, 2 x 3 rows: the kernel; 2 x 40 rows: the prefill path
@pytest.mark.parametrize("k", [64, 96])
@pytest.mark.parametrize("prefill", ["fp32", "bf16", "kernel"])
def test_int8_matches_dequantized_reference(m: int, k: int, prefill: str) -> None:
    lin = _lin(k, 48)
    q = Int8Linear.from_dense(lin)
    q.plan = ExecPlan(small_m=16, prefill=prefill)
    x = torch.randn(2, m, k)
    ref = x @ q.dequantized_weight().T + lin.bias
    y = q(x)
    assert y.shape == (2, m, 48) and y.dtype == torch.float32
    on_kernel = 2 * m <= 16 or prefill == "kernel"  # without llmspeed's kernels: torch's, bf16 activations
    tol = (Q8_TOL if int8_mod.kernels.available() else BF16_TOL) if on_kernel else \
        (BF16_TOL if prefill == "bf16" else FP32_TOL)
    assert _rel(y, ref) < tol
    # and close to the original float layer: int8 weights lose ~1/254 of each row's range
    assert _rel(y, lin(x)) < 3e-2


@pytest.mark.parametrize("k", [8, 24, 40, 63, 65, 68, 100])
def test_int8_guard_for_k_not_multiple_of_16(k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without llmspeed's kernels decode rows go to torch's int8 kernel, which is wrong or crashes when
    K % 16 != 0 (K = 8, 24 segfault on AVX-512): those layers take the float32 path."""
    monkeypatch.setattr(int8_mod.kernels, "available", lambda: False)
    lin = _lin(k, 32, seed=k)
    q = Int8Linear.from_dense(lin)
    assert not q.kernel_ok
    x = torch.randn(1, k)  # one row would take the kernel if it were allowed
    ref = x @ q.dequantized_weight().T + lin.bias
    assert _rel(q(x), ref) < 1e-5


@pytest.mark.parametrize("m", [1, 5, 33])
@pytest.mark.parametrize("group,sym", [(32, True), (64, False), (128, True)])
@pytest.mark.parametrize("prefill", ["fp32", "bf16", "kernel"])
def test_int4_matches_dequantized_reference(m: int, group: int, sym: bool, prefill: str) -> None:
    lin = _lin(256, 40, seed=group)  # N = 40: any N works on llmspeed's kernel
    q = Int4Linear.from_dense(lin, group, sym)
    q.plan = ExecPlan(small_m=16, prefill=prefill)
    x = torch.randn(m, 256)
    w = q.dequantized_weight()
    ref = x @ w.T + lin.bias
    on_kernel = m <= 16 or prefill == "kernel"
    assert _rel(q(x), ref) < (Q8_TOL if on_kernel else BF16_TOL if prefill == "bf16" else FP32_TOL)
    # the dequantized weight is our own math on the stored codes (float16 params)
    from llmspeed.layers.quant.formats import quantize_int4_groups

    assert torch.allclose(w, quantize_int4_groups(lin.weight, group, sym).dequantize(), atol=1e-6)
    assert _rel(q(x), lin(x)) < 0.2  # 4-bit weights: ~10% relative output error on random weights


def test_int4_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="K % 64"):
        Int4Linear(96, 32, 64)


@pytest.mark.parametrize("cls", [Int8Linear, Int4Linear])
def test_misaligned_loaded_buffers_are_realigned(cls: type) -> None:
    """safetensors can hand out tensors at any file offset; `_weight_int8pack_mm` segfaults on those."""
    lin = _lin(64, 32, bias=False)
    q = Int8Linear.from_dense(lin) if cls is Int8Linear else Int4Linear.from_dense(lin, 32)
    sd = q.state_dict()
    wname = "weight_int8" if cls is Int8Linear else "weight_codes"
    w = sd[wname]
    raw = torch.empty(w.numel() + 24, dtype=w.dtype)[24:]  # deliberately 24 bytes past an aligned start
    raw.copy_(w.flatten())
    sd[wname] = raw.view(w.shape)
    assert sd[wname].data_ptr() % 64 != 0
    with torch.device("meta"):
        m = cls(64, 32) if cls is Int8Linear else cls(64, 32, 32)
    m.load_state_dict(sd, assign=True)
    assert getattr(m, wname).data_ptr() % 64 == 0 and torch.equal(getattr(m, wname), w)
    x = torch.randn(1, 64)
    assert torch.equal(m(x), q(x))
