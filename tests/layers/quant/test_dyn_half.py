"""int8-dyn (fbgemm) and bf16/fp16 linears vs float references."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llmspeed.layers.quant.half import HalfLinear
from llmspeed.layers.quant.int8_dyn import Int8DynLinear


def _rel(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y - ref).norm() / ref.norm())


@pytest.mark.parametrize("m", [1, 7, 64])
def test_int8_dyn_close_to_dequantized_reference(m: int) -> None:
    torch.manual_seed(m)
    lin = nn.Linear(96, 48).requires_grad_(False)
    q = Int8DynLinear.from_dense(lin)
    x = torch.randn(m, 96)
    ref = x @ q.dequantized_weight().T + lin.bias
    # per-token 7-bit activations (reduce_range): ~1/127 of each row's range -> ~2-3% relative output error
    assert _rel(q(x), ref) < 4e-2


def test_int8_dyn_repacks_after_buffer_swap() -> None:
    lin = nn.Linear(32, 16, bias=False).requires_grad_(False)
    q = Int8DynLinear.from_dense(lin)
    x = torch.randn(2, 32)
    y0 = q(x)
    q.weight_int8 = -q.weight_int8  # what load_state_dict(assign=True) does: a new tensor object
    assert torch.allclose(q(x), -y0, atol=5e-2 * float(y0.abs().max()))


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 1e-2), (torch.float16, 2e-3)])
@pytest.mark.parametrize("m", [1, 9])
def test_half_linear(dtype: torch.dtype, tol: float, m: int) -> None:
    torch.manual_seed(0)
    lin = nn.Linear(64, 32).requires_grad_(False)
    h = HalfLinear.from_dense(lin, dtype)
    assert h.weight.dtype == dtype
    x = torch.randn(m, 64)
    y = h(x)
    assert y.dtype == torch.float32 and _rel(y, lin(x)) < tol


def test_half_large_m_path_is_exact_on_half_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a native half matmul, many-row calls upcast the half weights: exact fp32 math on them."""
    from llmspeed.layers.quant import half as mixed

    monkeypatch.setattr(mixed, "fast_half_matmul", lambda dtype: False)
    lin = nn.Linear(64, 32, bias=False).requires_grad_(False)
    h = HalfLinear.from_dense(lin, torch.bfloat16)
    x = torch.randn(mixed.SMALL_M + 3, 64)
    assert torch.allclose(h(x), x @ h.weight.float().T, atol=1e-5)
