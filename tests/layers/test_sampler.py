"""The sampler is NaN-safe row by row: a degenerate row falls back to greedy over its finite logits, the
other rows sample exactly as they would alone."""

from __future__ import annotations

import pytest
import torch

from llmspeed.layers.sampler import greedy_finite, sample_batch, sample_one

NAN, INF = float("nan"), float("inf")


def _finite_argmax(row: torch.Tensor) -> int:
    """Reference: the largest finite entry, by a plain Python scan."""
    vals = [(v, i) for i, v in enumerate(row.tolist()) if v == v and abs(v) != INF]
    return max(vals)[1]


@pytest.mark.parametrize("poison", [NAN, INF, -INF])
def test_greedy_row_with_nonfinite_logit_falls_back_to_finite_argmax(poison: float) -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 50)  # [B, V]
    clean = logits.argmax(-1).tolist()
    logits[2, 7] = poison
    logits[2, clean[2]] = poison  # the row's real argmax is poisoned too
    got = sample_batch(logits, [0.0] * 4, [0] * 4, [1.0] * 4, [None] * 4)
    assert got[2] == _finite_argmax(logits[2])
    assert [got[i] for i in (0, 1, 3)] == [clean[i] for i in (0, 1, 3)]


def test_all_nonfinite_row_raises() -> None:
    with pytest.raises(ValueError, match="finite"):
        greedy_finite(torch.tensor([NAN, INF, -INF]))


@pytest.mark.parametrize(("temperature", "top_k", "top_p", "poison"), [
    (1.0, 0, 1.0, NAN),        # NaN logit -> NaN probabilities
    (1.0, 0, 1.0, INF),        # +inf logit -> inf - inf in softmax
    (5e-324, 0, 1.0, None),    # subnormal temperature: float32 division by 0
    (1.0, 0, 5e-324, None),    # top_p rounds to 0 in float32: the top token is still kept
    (0.7, 3, 0.5, NAN),
])
def test_degenerate_sampling_row_is_greedy(temperature: float, top_k: int, top_p: float, poison: float | None) -> None:
    torch.manual_seed(1)
    row = torch.randn(64)  # [V]
    if poison is not None:
        row[5] = poison
    gen = torch.Generator().manual_seed(0)
    assert sample_one(row, temperature, top_k, top_p, gen) == _finite_argmax(row)


def test_top_p_tiny_keeps_only_the_top_token_with_a_healthy_row() -> None:
    row = torch.log(torch.tensor([0.1, 0.6, 0.3]))
    gen = torch.Generator().manual_seed(0)
    assert {sample_one(row, 1.0, 0, 1e-30, gen) for _ in range(50)} == {1}


def test_degenerate_row_does_not_change_other_rows_samples() -> None:
    torch.manual_seed(2)
    logits = torch.randn(3, 40)  # [B, V]
    alone = [sample_one(logits[i], 0.9, 0, 0.95, torch.Generator().manual_seed(10 + i)) for i in (0, 2)]
    bad = logits.clone()
    bad[1] = NAN
    bad[1, 3] = 0.5  # one finite entry: the fallback's only choice
    gens = [torch.Generator().manual_seed(10 + i) for i in range(3)]
    got = sample_batch(bad, [0.9] * 3, [0] * 3, [0.95] * 3, gens)
    assert got[1] == 3
    assert [got[0], got[2]] == alone
