"""Int8GroupLinear / Int8GroupEmbedding (int8 codes + one float16 scale per 32 columns) against their math.

- `from_dense`: d = max|w| / 127 rounded UP to float16 (never below, at most one float16 step above), codes
  round to nearest on that grid (|w - q d| <= d / 2) and every group's largest |w| lands within half a step of
  the grid's end; the stored scales are the float16 values of d.
- the module's paths: the kernel and the fp32 prefill are a float32 GEMM on the dequantized weight (summation order
  only), the bf16 prefill within bf16 rounding; realigned after loading misaligned buffers.
- the tied embedding gathers exactly the head's dequantized rows.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llmspeed.layers.quant.embedding import Int8GroupEmbedding
from llmspeed.layers.quant.formats import quantize_int8_groups
from llmspeed.layers.quant.int8g import Int8GroupLinear
from llmspeed.layers.quant.plan import ExecPlan

FP32_TOL = 1e-5  # float32 GEMMs: summation order only
BF16_TOL = 1.5e-2  # bf16 activations and weights (8-bit mantissa)


def _lin(k: int, n: int, bias: bool = True, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    lin = nn.Linear(k, n, bias=bias).requires_grad_(False)
    lin.weight[:, :32] *= 20.0  # groups of very different ranges: per-group scales matter
    return lin


def _rel(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y - ref).norm() / ref.norm())


def test_from_dense_grid() -> None:
    lin = _lin(96, 40, bias=False)
    w = lin.weight.float()  # [N, K]
    q, d = quantize_int8_groups(w)
    assert q.dtype == torch.int8 and d.dtype == torch.float16 and d.shape == (40, 3)
    amax = w.reshape(40, 3, 32).abs().amax(-1)  # [N, G]
    d32 = d.float()
    assert bool((d32 >= amax / 127).all())  # rounded up: the grid covers the group
    step_up = torch.nextafter(d32.half(), torch.full_like(d, float("inf"))).float() - d32  # one float16 step
    assert bool((d32 - amax / 127 <= step_up).all())  # ... by less than one float16 step
    ds = d32.repeat_interleave(32, dim=1)  # [N, K]
    assert bool(((w - q.float() * ds).abs() <= ds / 2 * (1 + 1e-6)).all())  # round to nearest
    assert torch.equal(q.float(), torch.round(w / ds))  # and exactly the nearest code (no clamping needed)
    assert int(q.abs().max()) <= 127
    m = Int8GroupLinear.from_dense(lin)
    assert torch.equal(m.weight_int8, q) and torch.equal(m.weight_scales, d)
    assert torch.equal(m.dequantized_weight(), q.float() * ds)
    # a zero group stays zero (no division by zero)
    z = nn.Linear(64, 2, bias=False).requires_grad_(False)
    z.weight.zero_()
    assert not bool(Int8GroupLinear.from_dense(z).dequantized_weight().any())


@pytest.mark.parametrize("m", [1, 3, 40])  # 2 x 1, 2 x 3 rows: the kernel; 2 x 40 rows: the prefill path
@pytest.mark.parametrize("prefill", ["fp32", "bf16", "kernel"])
def test_paths_match_dequantized_reference(m: int, prefill: str) -> None:
    lin = _lin(96, 33)
    q = Int8GroupLinear.from_dense(lin)
    q.plan = ExecPlan(small_m=16, prefill=prefill)
    x = torch.randn(2, m, 96)
    ref = x @ q.dequantized_weight().T + lin.bias
    y = q(x)
    assert y.shape == (2, m, 33) and y.dtype == torch.float32
    on_kernel = 2 * m <= 16 or prefill == "kernel"
    assert _rel(y, ref) < (BF16_TOL if prefill == "bf16" and not on_kernel else FP32_TOL)
    # close to the float layer: int8 per 32 columns loses at most half a step of each group's range
    assert _rel(y, lin(x)) < 1e-2
    q.plan = ExecPlan(reference=True)
    assert _rel(q(x), ref) < FP32_TOL


def test_rejects_k_not_multiple_of_32() -> None:
    with pytest.raises(ValueError, match="K % 32"):
        Int8GroupLinear(48, 8)
    with pytest.raises(ValueError, match="does not divide"):
        quantize_int8_groups(torch.randn(4, 48))


def test_misaligned_loaded_buffers_are_realigned() -> None:
    q = Int8GroupLinear.from_dense(_lin(64, 32, bias=False))
    sd = q.state_dict()
    assert set(sd) == {"weight_int8", "weight_scales"}
    for name in sd:
        t = sd[name]
        raw = torch.empty(t.numel() + 24, dtype=t.dtype)[24:]  # deliberately off an aligned start
        raw.copy_(t.flatten())
        sd[name] = raw.view(t.shape)
        assert sd[name].data_ptr() % 64 != 0
    with torch.device("meta"):
        m = Int8GroupLinear(64, 32)
    m.load_state_dict(sd, assign=True)
    assert m.weight_int8.data_ptr() % 64 == 0 and m.weight_scales.data_ptr() % 64 == 0
    assert torch.equal(m.weight_int8, q.weight_int8) and torch.equal(m.weight_scales, q.weight_scales)
    x = torch.randn(1, 64)
    assert torch.equal(m(x), q(x))


class _Tied(nn.Module):
    def __init__(self, head: Int8GroupLinear) -> None:
        super().__init__()
        self.lm_head = head
        self.embed = Int8GroupEmbedding(self)


def test_tied_embedding_gathers_the_heads_rows() -> None:
    head = Int8GroupLinear.from_dense(_lin(96, 50, bias=False))
    model = _Tied(head)
    assert [n for n, _ in model.named_modules()] == ["", "lm_head", "embed"]  # the head is not registered twice
    ids = torch.tensor([[0, 49, 7, 7], [3, 1, 2, 48]])  # [B, T]
    rows = model.embed(ids)  # [B, T, C]
    assert rows.shape == (2, 4, 96) and rows.dtype == torch.float32
    assert torch.equal(rows, head.dequantized_weight()[ids])  # exact: q * d in float32
    assert not list(model.embed.parameters()) and not list(model.embed.buffers())
