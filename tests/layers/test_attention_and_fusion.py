"""Attention over the paged cache (gather and contiguous-slice paths) and projection fusion."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llmspeed.layers.attention import AttnBatch, attend, causal_mask
from llmspeed.layers.linear import FusedLinears
from llmspeed.layers.norm import RMSNorm
from llmspeed.layers.quant.int4 import Int4Linear
from llmspeed.layers.quant.int8 import Int8Linear


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Plain causal MHA with K/V heads repeated: q [T, H, D], k/v [T, Hkv, D] -> [T, H*D]."""
    T, H, D = q.shape
    rep = H // k.shape[1]
    kr, vr = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    s = torch.einsum("thd,shd->hts", q, kr) * scale
    s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return torch.einsum("hts,shd->thd", torch.softmax(s, -1), vr).reshape(T, H * D)


def test_decode_over_cache_matches_reference_with_and_without_gather() -> None:
    torch.manual_seed(0)
    T, H, Hkv, D, slots = 9, 4, 2, 8, 64
    q, k, v = torch.randn(T, H, D), torch.randn(T, Hkv, D), torch.randn(T, Hkv, D)
    ref = reference_attention(q, k, v, D**-0.5)
    for contiguous in (True, False):
        ck, cv = torch.zeros(Hkv, slots, D), torch.zeros(Hkv, slots, D)
        slot_of = list(range(16, 16 + T)) if contiguous else [40 - 3 * i for i in range(T)]
        # prefill the first T-1 tokens, then decode the last one
        pre = AttnBatch(positions=torch.arange(T - 1).view(1, -1), mask=causal_mask(torch.arange(T - 1).view(1, -1), T - 1),
                        slot_mapping=torch.tensor(slot_of[:-1]), gather_idx=torch.tensor([slot_of[:-1]]))
        out_pre = attend(q[None, :-1], k[None, :-1], v[None, :-1], pre, (ck, cv), D**-0.5)
        assert torch.allclose(out_pre[0], ref[:-1], atol=1e-5)
        dec = AttnBatch(positions=torch.tensor([[T - 1]]), mask=None, slot_mapping=torch.tensor([slot_of[-1]]),
                        gather_idx=None if contiguous else torch.tensor([slot_of]),
                        kv_range=(16, T) if contiguous else None)
        out = attend(q[None, -1:], k[None, -1:], v[None, -1:], dec, (ck, cv), D**-0.5)
        assert torch.allclose(out[0, 0], ref[-1], atol=1e-5)


def test_fused_linears_match_separate_and_invalidate_on_swap() -> None:
    torch.manual_seed(0)
    lins = [nn.Linear(16, n, bias=True) for n in (8, 4, 4)]
    x = torch.randn(3, 16)
    ref = [lin(x) for lin in lins]
    fused = FusedLinears(lins)
    assert fused.valid(tuple(lins))
    for a, b in zip(fused(x), ref, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert lins[0].weight.data_ptr() == fused.fused.weight.data_ptr()  # views: no second copy of the weights
    handle = lins[2].register_forward_pre_hook(lambda m, a: None)  # a calibration hook must see its inputs
    assert not fused.valid(tuple(lins))
    handle.remove()
    assert fused.valid(tuple(lins))
    lins[1].weight = nn.Parameter(torch.zeros(4, 16))  # a compression step replaced a weight
    assert not fused.valid(tuple(lins))


@pytest.mark.parametrize("kind", ["int8", "int4", "mixed"])
def test_quantized_linears_fuse_into_one_module(kind: str) -> None:
    """q/k/v-like quantized linears stack along N into one module of their type; buffers become views."""
    torch.manual_seed(1)
    dense = [nn.Linear(64, n, bias=False) for n in (48, 16, 16)]
    if kind == "int8":
        mods: list[nn.Module] = [Int8Linear.from_dense(d) for d in dense]
    else:
        mods = [Int4Linear.from_dense(d, 32, symmetric=False) for d in dense]
    if kind == "mixed":
        mods[1] = Int8Linear.from_dense(dense[1])
        assert not FusedLinears.fusable(mods)
        return
    assert FusedLinears.fusable(mods)
    x = torch.randn(3, 64)
    ref = [m(x) for m in mods]
    fused = FusedLinears(mods)
    assert type(fused.fused) is type(mods[0]) and fused.valid(tuple(mods))
    for a, b in zip(fused(x), ref, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    first = next(iter(mods[0].buffers()))
    assert first.data_ptr() == next(iter(fused.fused.buffers())).data_ptr()  # views into the fused buffers
    for a, m in zip(ref, mods, strict=True):  # the separate modules still compute the same on their views
        assert torch.allclose(m(x), a, atol=1e-6)


def test_rmsnorm_matches_formula() -> None:
    torch.manual_seed(0)
    norm = RMSNorm(32, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(4, 32)
    ref = norm.weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    assert torch.allclose(norm(x), ref, atol=1e-6)
    assert norm(x.bfloat16()).dtype == torch.bfloat16
