"""GGUF Q4 blocks imported straight into int4-g32-asym modules, a Q8_0 head table into int8-head-g32
(models/gguf_quant.py).

Checks: block decoding equals gguf's own dequantize; the modules' weights EQUAL the fp32 values (float16 scale
and min, or Q8_0's d, are the blocks' own); codes equal round-to-nearest of the dequantized weights; Q/K rows
un-permuted; the `default:native` model agrees with the float32 default model (within float summation error on
the fp32 prefill path); save/reload gives identical logits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import llmspeed
from llmspeed.layers.quant.embedding import Int8GroupEmbedding
from llmspeed.layers.quant.formats import quantize_int4_groups, quantize_int8_groups
from llmspeed.layers.quant.gguf_blocks import groups_from_blocks, q4_blocks, q8_0_blocks
from llmspeed.layers.quant.int4 import Int4Linear
from llmspeed.layers.quant.int8g import Int8GroupLinear
from llmspeed.models.gguf_file import unpermute_qk

gguf = pytest.importorskip("gguf")
PROMPT = "The quick brown fox jumps over the lazy dog. To be, or not to be, that is the question"


def _quantize(w: torch.Tensor, kind: str) -> np.ndarray:
    qt = getattr(gguf.GGMLQuantizationType, kind)
    return gguf.quants.quantize(w.numpy(), qt)  # [N, K/32 * block bytes] uint8


def _dequant(data: np.ndarray, kind: str) -> torch.Tensor:
    arr = gguf.quants.dequantize(data, getattr(gguf.GGMLQuantizationType, kind))
    return torch.from_numpy(np.array(arr, dtype=np.float32))


def _check_exact(g: Any, ref: torch.Tensor) -> None:
    assert torch.equal(g.dequantize(), ref)  # [N, K]: no second rounding anywhere
    assert torch.equal(Int4Linear.from_groups(g).dequantized_weight(), ref)  # float16 storage is exact too


@pytest.mark.parametrize("kind", ["Q4_1", "Q4_0"])
def test_synthetic_blocks(kind: str) -> None:
    n_heads, n, k = 4, 64, 96  # rows = 4 heads x 16
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(0)) * 0.05 + 0.01
    data = _quantize(w, kind)
    ref = _dequant(data, kind)  # [N, K] what the fp32 loader produces
    codes, d, m = q4_blocks(data, n, k, kind)
    assert torch.equal(codes.float() * d.repeat_interleave(32, 1) + m.repeat_interleave(32, 1), ref)
    g = groups_from_blocks(data, n, k, kind)
    assert torch.equal(g.codes, codes)
    _check_exact(g, ref)
    # Q/K un-permutation moves whole rows with their group scales
    gp = groups_from_blocks(data, n, k, kind, lambda x: unpermute_qk(x, n_heads))
    assert torch.equal(gp.codes, unpermute_qk(codes, n_heads))
    assert torch.equal(gp.dequantize(), unpermute_qk(g.dequantize(), n_heads))


def test_synthetic_q8_0_blocks() -> None:
    n, k = 24, 96
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(1)) * 0.05
    data = _quantize(w, "Q8_0")
    ref = _dequant(data, "Q8_0")  # [N, K]
    q, d = q8_0_blocks(data, n, k)
    assert q.dtype == torch.int8 and d.dtype == torch.float16 and d.shape == (n, k // 32)
    m = Int8GroupLinear.from_codes(q, d)
    assert torch.equal(m.dequantized_weight(), ref)  # bit for bit: q * d is exact in float32
    # llama.cpp's Q8_0 grid is the one `from_dense` finds (d = max|w| / 127, round to nearest), up to d's rounding
    q2, d2 = quantize_int8_groups(w)
    assert float((q2.int() - q.int()).abs().max()) <= 1
    assert torch.allclose(d2.float(), d.float(), rtol=2e-3)


@pytest.fixture(scope="module")
def reader() -> Any:
    from llmspeed.models.default_model import default_gguf_path
    from llmspeed.models.gguf_file import open_gguf

    try:
        return open_gguf(default_gguf_path())
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("name,heads", [("blk.0.attn_q.weight", 9), ("blk.3.attn_k.weight", 3),
                                        ("blk.0.ffn_down.weight", None)])
def test_real_blocks_vs_dequantize_then_quantize(reader: Any, name: str, heads: int | None) -> None:
    t = next(t for t in reader.tensors if t.name == name)
    assert t.tensor_type.name == "Q4_1"
    n, k = int(t.shape[1]), int(t.shape[0])
    ref = _dequant(t.data, "Q4_1")
    ref = unpermute_qk(ref, heads) if heads else ref  # what the float32 loader holds
    g = groups_from_blocks(t.data, n, k, "Q4_1", (lambda x: unpermute_qk(x, heads)) if heads else None)
    _check_exact(g, ref)
    # RTN int4-g32-asym of the dequantized weights finds the same codes (every Q4_1 block spans 0..15 here)
    # and, re-deriving scale = (max - min) / 15 and min in float16, (nearly) the same grid
    rtn = quantize_int4_groups(ref, 32, symmetric=False)
    assert torch.equal(rtn.codes, g.codes)
    assert torch.allclose(rtn.dequantize(), ref, atol=1e-3)


@pytest.fixture(scope="module")
def models(reader: Any) -> tuple[llmspeed.LLM, llmspeed.LLM, torch.Tensor]:
    fp = llmspeed.load("default:fp32")
    nat = llmspeed.load("default")  # as shipped: the GGUF's Q4_1 blocks (== default:native)
    ids = torch.tensor([fp.tokenizer.encode(PROMPT)])  # [1, T]
    return fp, nat, ids


def test_real_q8_0_head(reader: Any, models: tuple[llmspeed.LLM, llmspeed.LLM, torch.Tensor]) -> None:
    """The tied Q8_0 token_embd: the head's dequantized weight and the embedding's rows are gguf's own
    dequantization bit for bit, and the decode kernel on the real table is a float32 GEMM on those weights."""
    fp, nat, ids = models
    t = next(t for t in reader.tensors if t.name == "token_embd.weight")
    assert t.tensor_type.name == "Q8_0" and fp.config.tie_embeddings
    ref = _dequant(t.data, "Q8_0")  # [V, C]
    head = nat.model.lm_head
    assert isinstance(head, Int8GroupLinear) and isinstance(nat.model.model.embed_tokens, Int8GroupEmbedding)
    assert torch.equal(head.dequantized_weight(), ref)
    assert torch.equal(ref, fp.model.lm_head.weight.detach())
    assert torch.equal(nat.model.model.embed_tokens(ids), ref[ids])
    x = torch.randn(3, ref.shape[1], generator=torch.Generator().manual_seed(0))  # [3, C]
    bound = x.abs() @ ref.abs().t()  # [3, V]
    assert bool(((head.kernel_matmul(x) - x @ ref.t()).abs() <= 1e-5 * bound).all())


def test_native_fp32_prefill_matches_fp32(default_llm: llmspeed.LLM,
                                          models: tuple[llmspeed.LLM, llmspeed.LLM, torch.Tensor]) -> None:
    """Same weights (int4 blocks and the Q8_0 table exact): on the fp32 prefill path the logits differ from the
    float32 model's by float32 summation order only (HF parity's tolerance, tests/models/test_parity.py)."""
    fp, _, ids = models
    assert default_llm.recipe == ["int4-g32-asym", "int8-head-g32"]
    ref = fp.logits(ids)  # [1, T, V]
    assert float((default_llm.logits(ids) - ref).abs().max()) <= 1e-3
    short = ids[:, :5]  # T <= small_m: every linear, the head included, on the decode kernels
    assert float((default_llm.logits(short) - fp.logits(short)).abs().max()) <= 1e-3


def test_native_model_matches_fp32(models: tuple[llmspeed.LLM, llmspeed.LLM, torch.Tensor]) -> None:
    fp, nat, ids = models
    assert nat.recipe == ["int4-g32-asym", "int8-head-g32"]
    lins = [m for m in nat.model.modules() if isinstance(m, Int4Linear)]
    assert len(lins) == 7 * fp.config.n_layers
    ref = fp.logits(ids)  # [1, T, V]
    out = nat.logits(ids)
    # same weights; only the prefill path's arithmetic differs (bf16 GEMM where measured fastest: |dlogit| < 1.5)
    assert float((out - ref).abs().max()) < 1.5
    assert float((out.argmax(-1) == ref.argmax(-1)).float().mean()) >= 0.9
    # the model's own buffers, read back through the kernel, are the fp32 model's weights (Q/K rows un-permuted)
    attn_n, attn_f = nat.model.model.layers[0].self_attn, fp.model.model.layers[0].self_attn
    for proj in ("q_proj", "k_proj", "v_proj"):
        w = getattr(attn_n, proj).dequantized_weight()  # [N, K]
        assert torch.equal(w, getattr(attn_f, proj).weight.detach())


def test_native_save_reload(models: tuple[llmspeed.LLM, llmspeed.LLM, torch.Tensor], tmp_path: Path) -> None:
    _, nat, ids = models
    out = nat.save(tmp_path / "native")
    assert json.loads((out / "recipe.json").read_text())["steps"] == ["int4-g32-asym", "int8-head-g32"]
    again = llmspeed.load(out)
    assert torch.equal(again.logits(ids), nat.logits(ids))
