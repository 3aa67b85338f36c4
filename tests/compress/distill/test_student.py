"""Student construction: block influence (against a naive recompute), layer choice, copied weights, width pruning."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import llmspeed
from llmspeed.compress.distill.student import (
    block_influence,
    build_student,
    choose_layers,
    decoder_layers,
    hidden_targets,
    spec_from_file,
)
from llmspeed.layers.attention import AttnBatch
from llmspeed.models.loading import load_model


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, AttnBatch.no_cache(*ids.shape))


def _logits_skipping(model: nn.Module, ids: torch.Tensor, skip: set[int]) -> torch.Tensor:
    """Reference: the teacher's forward with the skipped blocks turned into identities by forward hooks."""
    hooks = [lay.register_forward_hook(lambda _m, args, _out: args[0])
             for i, lay in enumerate(decoder_layers(model)) if i in skip]
    try:
        return _logits(model, ids)
    finally:
        for h in hooks:
            h.remove()


def _naive_influence(model: nn.Module, ids: torch.Tensor) -> list[float]:
    """1 − mean cos(x_i, x_{i+1}) from hidden states recomputed block by block by hand."""
    meta = AttnBatch.no_cache(*ids.shape)
    with torch.no_grad():
        x = model.model.embed_tokens(ids)
        rope = model.rotary(meta.positions)
        out = []
        for layer in model.model.layers:
            y = layer(x, rope, meta, None)
            out.append(float((1 - F.cosine_similarity(x, y, dim=-1)).mean()))
            x = y
    return out


def test_block_influence_matches_naive_and_finds_the_identity_block(tiny4: Path, windows: torch.Tensor) -> None:
    teacher = load_model(tiny4).model
    with torch.no_grad():  # block 2 writes nothing into the residual stream: output == input
        teacher.model.layers[2].self_attn.o_proj.weight.zero_()
        teacher.model.layers[2].mlp.down_proj.weight.zero_()
    bi = block_influence(teacher, windows, batch_size=5)
    ref = _naive_influence(teacher, windows)
    assert bi == pytest.approx(ref, rel=1e-4, abs=1e-6)
    assert abs(bi[2]) < 1e-5 and min(b for i, b in enumerate(bi) if i != 2) > 1e-3
    student, plan = build_student(teacher, 3, "influence", (), windows)
    assert plan.kept == [0, 1, 3] and plan.influence == pytest.approx(bi)
    ids = windows[:2]
    torch.testing.assert_close(_logits(student, ids), _logits(teacher, ids), rtol=0, atol=1e-5)  # nothing lost


def test_student_copies_the_kept_layers(tiny4: Path, windows: torch.Tensor) -> None:
    teacher = load_model(tiny4).model
    student, plan = build_student(teacher, None, (0, 3), (), windows)
    assert plan.kept == [0, 3] and student.config.n_layers == 2 and len(student.model.layers) == 2
    for j, i in enumerate(plan.kept):
        for (n_s, p_s), (n_t, p_t) in zip(student.model.layers[j].named_parameters(),
                                          teacher.model.layers[i].named_parameters(), strict=True):
            assert n_s == n_t and torch.equal(p_s, p_t) and p_s.data_ptr() != p_t.data_ptr()
    assert torch.equal(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight)
    assert student.lm_head.weight is student.model.embed_tokens.weight  # still tied
    assert all(p.requires_grad and p.dtype == torch.float32 for p in student.parameters())
    ids = windows[:2]
    torch.testing.assert_close(_logits(student, ids), _logits_skipping(teacher, ids, {1, 2}), rtol=0, atol=1e-5)
    with torch.no_grad():  # the student owns its tensors: training it never touches the teacher
        student.model.layers[0].mlp.up_proj.weight.add_(1.0)
    assert not torch.equal(student.model.layers[0].mlp.up_proj.weight, teacher.model.layers[0].mlp.up_proj.weight)


def test_choose_layers_modes_and_errors() -> None:
    every = choose_layers(30, 15, "every-k")
    assert every[0] == 0 and every[-1] == 29 and len(every) == 15
    assert {b - a for a, b in itertools.pairwise(every)} <= {2, 3}  # evenly spaced: 29/14 ≈ 2.07
    assert choose_layers(4, 2, "every-k") == [0, 3] and choose_layers(5, 3, "every-k") == [0, 2, 4]
    assert choose_layers(4, 2, "influence", [0.5, 0.1, 0.1, 0.3]) == [0, 3]
    assert choose_layers(4, 2, "influence", [0.2, 0.1, 0.2, 0.05]) == [0, 2]  # tie: the lower index stays
    with pytest.raises(ValueError, match=r"teacher has layers 0\.\.3"):
        choose_layers(4, None, (0, 4))
    with pytest.raises(ValueError, match="disagrees"):
        choose_layers(4, 3, (0, 1))


@pytest.mark.parametrize("n", [0, 4, 7])
def test_student_layers_out_of_range(tiny4: Path, windows: torch.Tensor, n: int) -> None:
    with pytest.raises(ValueError, match=r"between 1 and 3 \(the teacher has 4\)"):
        build_student(load_model(tiny4).model, n, "influence", (), windows)


def test_width_pruning_then_depth_saves_and_loads(tiny4: Path, windows: torch.Tensor, tmp_path: Path) -> None:
    from llmspeed.compress.distill.checkpoint import save_student

    loaded = load_model(tiny4)
    student, plan = build_student(loaded.model, 2, "every-k", ("prune-mlp-25", "prune-heads-50"), windows)
    cfg = student.config
    assert (cfg.n_layers, cfg.intermediate_size, cfg.n_kv_heads, cfg.n_heads) == (2, 96, 1, 2)
    assert student.model.layers[1].mlp.down_proj.weight.shape == (64, 96) and len(plan.prune_notes) == 2
    save_student(tmp_path / "s", student, loaded.tokenizer, list(plan.prune_steps), {"model": "t"}, {"x": 1})
    back = llmspeed.load(tmp_path / "s")
    assert back.recipe == ["prune-mlp-25", "prune-heads-50"] and back.config.n_layers == 2
    torch.testing.assert_close(back.logits(windows[:2]), _logits(student, windows[:2]), rtol=0, atol=1e-5)
    assert json.loads((tmp_path / "s" / "recipe.json").read_text())["distill"] == {"x": 1}


def test_gpt2_student(tiny_model_dir, windows: torch.Tensor) -> None:
    teacher = load_model(tiny_model_dir("gpt2")).model
    student, plan = build_student(teacher, 1, "influence", (), windows)
    assert len(student.transformer.h) == 1 and student.config.n_layers == 1
    skip = {0, 1} - set(plan.kept)
    torch.testing.assert_close(_logits(student, windows[:2]), _logits_skipping(teacher, windows[:2], skip),
                               rtol=0, atol=1e-5)


def test_student_config_file(tmp_path: Path, tiny4: Path) -> None:
    cfg = load_model(tiny4).config
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"num_hidden_layers": 2, "intermediate_size": 96, "num_key_value_heads": 1,
                             "keep": [0, 3]}))
    assert spec_from_file(f, cfg) == {"student_layers": 2, "keep": "0,3", "prune": "prune-heads-50,prune-mlp-25"}
    f.write_text(json.dumps({"intermediate_size": 200}))
    with pytest.raises(ValueError, match="between 1 and 128"):
        spec_from_file(f, cfg)
    f.write_text(json.dumps({"layers": 2}))
    with pytest.raises(ValueError, match="unknown keys"):
        spec_from_file(f, cfg)


def test_hidden_targets() -> None:
    assert hidden_targets([0, 1, 3], 4) == [0, 2, 3]  # block j should produce the state before kept block j+1
    assert hidden_targets([0, 3], 4) == [2, 3]
