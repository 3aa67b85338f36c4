"""Unstructured and 2:4 pruning: exact sparsity, exact patterns, Wanda vs magnitude, save/load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import llmspeed
from llmspeed.compress.api import Recipe, iter_linears
from llmspeed.compress.calibration import collect_activation_stats, get_calibration
from llmspeed.compress.prune.unstructured import magnitude_mask, n_m_mask, rowwise_mask, wanda_score


@pytest.fixture()
def calib(tiny_llm):
    return get_calibration(tiny_llm.tokenizer, n=8, seq_len=48)


def _linears(llm) -> list[tuple[str, nn.Linear]]:
    return list(iter_linears(llm.model))


def test_invalid_percentages_are_valueerrors() -> None:
    for bad in ("prune-magnitude-150", "prune-magnitude-0", "prune-wanda-100"):
        with pytest.raises(ValueError, match=r"\(0, 100\)"):
            Recipe.parse(bad)
    assert str(Recipe.parse("prune-wanda-2:4,prune-magnitude-12.5")) == "prune-wanda-2:4,prune-magnitude-12.5"


def test_magnitude_exact_sparsity_per_layer(tiny_llm) -> None:
    emb = tiny_llm.model.model.embed_tokens.weight.clone()
    reps = llmspeed.compress_(tiny_llm, "prune-magnitude-30")
    assert len(reps[0].changed) == 14  # 2 layers x 7 linears, lm_head skipped
    for _, lin in _linears(tiny_llm):
        w = lin.weight
        assert int((w == 0).sum()) == round(0.3 * w.numel())
    assert torch.equal(tiny_llm.model.model.embed_tokens.weight, emb)  # tied lm_head / embeddings untouched
    assert any("dense" in n for n in reps[0].notes)


def test_magnitude_removes_the_smallest() -> None:
    w = torch.tensor([[0.1, -5.0, 0.3], [-0.2, 4.0, 0.05]])
    keep = magnitude_mask(w, 50)
    assert keep.tolist() == [[False, True, True], [False, True, False]]


def test_wanda_exact_sparsity_per_output_row(tiny_llm, calib) -> None:
    llmspeed.compress_(tiny_llm, "prune-wanda-50", calib=calib)
    for _, lin in _linears(tiny_llm):
        zeros_per_row = (lin.weight == 0).sum(1)  # [out]
        assert (zeros_per_row == round(0.5 * lin.in_features)).all()


@pytest.mark.parametrize("recipe", ["prune-2:4", "prune-wanda-2:4"])
def test_2_4_pattern(tiny_llm, calib, recipe: str) -> None:
    llmspeed.compress_(tiny_llm, recipe, calib=calib)
    for _, lin in _linears(tiny_llm):
        groups = lin.weight.reshape(lin.out_features, -1, 4)  # [out, in/4, 4]
        assert ((groups == 0).sum(-1) >= 2).all()
        assert ((groups == 0).sum(-1) == 2).all()  # random weights: no accidental extra zeros


def test_2_4_magnitude_keeps_the_two_largest_of_each_group() -> None:
    s = torch.tensor([[1.0, 4.0, 3.0, 2.0, 0.5, 0.1, 0.9, 0.2]])
    assert n_m_mask(s).tolist() == [[False, True, True, False, True, False, True, False]]


def test_wanda_choice_differs_from_magnitude_when_activations_matter() -> None:
    w = torch.tensor([[0.1, 0.5, 0.6, 0.7]])  # channel 0 has the smallest weight ...
    x_norm = torch.tensor([100.0, 1.0, 1.0, 1.0])  # ... but by far the largest input
    mag = rowwise_mask(w.abs(), 25)
    wanda = rowwise_mask(wanda_score(w, x_norm), 25)
    assert mag.tolist() == [[False, True, True, True]]
    assert wanda.tolist() == [[True, False, True, True]]


def test_wanda_beats_magnitude_on_layer_output_error(tiny_llm, calib) -> None:
    m = tiny_llm.model
    with torch.no_grad():  # outlier channels, as in trained LLMs: non-uniform norm gains
        g = torch.Generator().manual_seed(0)
        for layer in m.model.layers:
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight.copy_(torch.exp(torch.randn(norm.weight.shape, generator=g)))
    names = [n for n, _ in _linears(tiny_llm)]
    stats = collect_activation_stats(m, calib, names, gram=True)
    wins = 0
    for name, lin in _linears(tiny_llm):
        w, st = lin.weight.detach().double(), stats[name]

        def out_err(keep: torch.Tensor, w: torch.Tensor = w, gram: torch.Tensor = st.gram) -> float:
            d = w * (~keep)  # [out, in] removed part
            return float(torch.einsum("oi,ij,oj->", d, gram, d))  # Σ_tokens ‖ΔW x‖²

        e_mag = out_err(magnitude_mask(w, 50))
        e_wanda = out_err(rowwise_mask(wanda_score(w, st.norm.double()), 50))
        wins += e_wanda < e_mag
    assert wins == len(names)


@pytest.mark.parametrize("recipe", ["prune-wanda-50", "prune-2:4"])
def test_pruned_tiny_model_generates_and_save_load_is_identical(tiny_llm, calib, tmp_path: Path,
                                                                recipe: str) -> None:
    llmspeed.compress_(tiny_llm, recipe, calib=calib)
    out = tiny_llm.generate("To be, or not", max_new_tokens=8, ignore_eos=True)[0]
    assert len(out.token_ids) == 8
    ids = torch.tensor([tiny_llm.tokenizer.encode("Friends, Romans, countrymen")])
    ref = tiny_llm.logits(ids)
    back = llmspeed.load(tiny_llm.save(tmp_path / "pruned"))
    assert back.recipe == [recipe]
    assert torch.equal(back.logits(ids), ref)
