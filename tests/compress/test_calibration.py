"""Calibration windows come from the calibration plays only; activation statistics are the right sums."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmspeed.compress.calibration import Calibration, collect_activation_stats, get_calibration
from llmspeed.data.texts import CALIBRATION_PLAYS, EVAL_PLAYS


def test_calibration_shape_determinism_and_sources(tiny_llm) -> None:
    c1 = get_calibration(tiny_llm.tokenizer, n=6, seq_len=32)
    c2 = get_calibration(tiny_llm.tokenizer, n=6, seq_len=32)
    assert c1.tokens.shape == (6, 32) and c1.n == 6 and c1.seq_len == 32
    assert torch.equal(c1.tokens, c2.tokens)
    assert set(c1.sources) <= set(CALIBRATION_PLAYS) and not set(c1.sources) & set(EVAL_PLAYS)
    assert len({tuple(r.tolist()) for r in c1.tokens}) == 6  # distinct windows


def test_calibration_file_errors(tiny_llm, tmp_path: Path) -> None:
    bad = tmp_path / "cal.bin"
    bad.write_bytes(b"\x80\x81\x82 binary")
    with pytest.raises(ValueError, match="unreadable calibration file"):
        get_calibration(tiny_llm.tokenizer, n=2, seq_len=16, path=bad)
    with pytest.raises(ValueError, match="unreadable calibration file"):
        get_calibration(tiny_llm.tokenizer, n=2, seq_len=16, path=tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="seq_len"):
        Calibration(tokens=torch.zeros(2, 1, dtype=torch.long))


def test_activation_stats_match_hand_computed_inputs(tiny_llm) -> None:
    calib = get_calibration(tiny_llm.tokenizer, n=4, seq_len=24)
    m = tiny_llm.model
    names = ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"]
    stats = collect_activation_stats(m, calib, names, gram=True, batch_size=3)
    with torch.no_grad():
        x = m.model.layers[0].input_layernorm(m.model.embed_tokens(calib.tokens))  # [n, T, C]
    x = x.reshape(-1, x.shape[-1]).double()  # [n*T, C]
    st = stats["model.layers.0.self_attn.q_proj"]
    assert st.n_tokens == 4 * 24
    torch.testing.assert_close(st.norm, x.norm(dim=0).float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(st.gram, x.T @ x, rtol=1e-4, atol=1e-5)
    assert stats["model.layers.1.mlp.down_proj"].sq_sum.shape == (m.config.intermediate_size,)
    assert isinstance(m.lm_head, torch.nn.Linear)  # the temporary lm_head skip is undone
    with pytest.raises(ValueError, match="no such modules"):
        collect_activation_stats(m, calib, ["model.layers.9.nope"])


@pytest.mark.parametrize("head", ["int8-head", "int8-head-g32"])
def test_calibration_after_a_tied_quantized_head(tiny_llm, head: str) -> None:
    """GPTQ and Wanda calibrate with the vocabulary projection skipped; a tied quantized embedding still reads its
    table from the real head (was: lm_head swapped for nn.Identity -> AttributeError 'weight_int8', which failed
    every auto trial that put int8-head before a calibrated step)."""
    from llmspeed.compress.calibration import head_skipped, run_model

    tiny_llm.compress_(head, progress=False)
    real = tiny_llm.model.lm_head
    ids = torch.tensor([[1, 2, 3]])
    with head_skipped(tiny_llm.model):
        assert tiny_llm.model.lm_head is not real and tiny_llm.model.lm_head.weight_int8 is real.weight_int8
        out = run_model(tiny_llm.model, ids)
    assert out.shape == (1, 3, tiny_llm.config.hidden_size)  # hidden states: the projection was skipped
    assert tiny_llm.model.lm_head is real
    tiny_llm.compress_("int4-g32-sym-gptq,prune-wanda-20", progress=False)
    assert tiny_llm.generate("Hello", max_new_tokens=3, ignore_eos=True)[0].token_ids
