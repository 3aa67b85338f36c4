"""Low-rank SVD: exact at full rank, minimal energy rank, FLOP guard, loud no-op, save/load."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

import llmspeed
from llmspeed.compress.calibration import get_calibration
from llmspeed.compress.lowrank.svd import cuts_flops, energy_rank
from llmspeed.layers.quant.lowrank import LowRankLinear


def test_full_rank_svd_reproduces_the_layer() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(80, 48, bias=True)
    lr = LowRankLinear.from_linear(lin, 48)
    x = torch.randn(5, 7, 80)
    torch.testing.assert_close(lr(x), lin(x), rtol=1e-5, atol=1e-5)
    assert lr.down.weight.shape == (48, 80) and lr.up.weight.shape == (48, 48)


def test_truncated_error_is_the_dropped_spectrum() -> None:
    torch.manual_seed(1)
    w = torch.randn(32, 24, dtype=torch.float64)
    lin = nn.Linear(24, 32, bias=False, dtype=torch.float64)
    lin.weight.data.copy_(w)
    s = torch.linalg.svdvals(w)
    for r in (1, 5, 12):
        lr = LowRankLinear.from_linear(lin, r)
        approx = lr.up.weight @ lr.down.weight  # [out, in]
        assert torch.linalg.matrix_norm(w - approx).item() == pytest.approx(s[r:].norm().item(), rel=1e-9)


def test_energy_rank_is_minimal() -> None:
    s = torch.tensor([2.0, 1.0, 1.0])  # energies 4, 1, 1 of 6
    assert energy_rank(s, 4 / 6) == 1 and energy_rank(s, 0.67) == 2 and energy_rank(s, 1.0) == 3
    torch.manual_seed(2)
    s = torch.linalg.svdvals(torch.randn(40, 30))
    e = s.double() ** 2
    for energy in (0.1, 0.5, 0.9, 0.95, 0.999, 1.0):
        r = energy_rank(s, energy)
        assert e[:r].sum() / e.sum() >= energy - 1e-12
        assert r == 1 or e[: r - 1].sum() / e.sum() < energy


def test_invalid_parameters() -> None:
    for bad, msg in (("svd-e1.5", r"\(0, 1\]"), ("svd-e0", r"\(0, 1\]"), ("svd-r0", ">= 1")):
        with pytest.raises(ValueError, match=msg):
            llmspeed.Recipe.parse(bad)


def test_only_layers_where_flops_drop_are_replaced(tiny_llm) -> None:
    rep = llmspeed.compress_(tiny_llm, "svd-r40")[0]
    # tiny llama: q/o 64x64, k/v 32x64, gate/up 128x64, down 64x128; 40·(in+out) < in·out only for 64x128 shapes
    assert cuts_flops(40, 64, 128) and not cuts_flops(40, 64, 64) and not cuts_flops(40, 64, 32)
    assert sorted(n.rsplit(".", 1)[1] for n in rep.changed) == sorted(["gate_proj", "up_proj", "down_proj"] * 2)
    assert all("would not cut FLOPs" in why for why in rep.skipped.values()) and len(rep.skipped) == 8
    assert "6 of 14 linears factorized" in rep.notes
    assert isinstance(tiny_llm.model.model.layers[0].mlp.down_proj, LowRankLinear)
    assert tiny_llm.config.extra["lowrank"]["model.layers.1.mlp.up_proj"] == 40


def test_a_step_that_changes_nothing_says_so_loudly(tiny_llm, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        rep = llmspeed.compress_(tiny_llm, "svd-e1")[0]  # full energy = full rank: never cheaper
    assert not rep.changed
    assert any("changed NOTHING" in n for n in rep.notes)
    assert any("changed NOTHING" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("recipe", ["svd-e0.9", "prune-mlp-25,svd-r16"])
def test_lowrank_tiny_model_generates_and_save_load_is_identical(tiny_llm, tmp_path: Path,
                                                                 recipe: str) -> None:
    llmspeed.compress_(tiny_llm, recipe, calib=get_calibration(tiny_llm.tokenizer, n=4, seq_len=32))
    assert tiny_llm.config.extra["lowrank"]
    assert len(tiny_llm.generate("Good night, sweet prince", max_new_tokens=6, ignore_eos=True)[0].token_ids) == 6
    ids = torch.tensor([tiny_llm.tokenizer.encode("What a piece of work is a man")])
    ref = tiny_llm.logits(ids)
    back = llmspeed.load(tiny_llm.save(tmp_path / "lr"))
    assert back.recipe == recipe.split(",")
    assert torch.equal(back.logits(ids), ref)
