"""Accept/reject sampling keeps the target distribution (chi-square, fixed seed); greedy acceptance."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare

from llmspeed.runtime.spec.rejection import accept_greedy, accept_sampled, processed_probs

V = 6
TRIALS = 6000


def _chi2_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    keep = probs > 0
    assert counts[~keep].sum() == 0, "a token with probability 0 was emitted"
    pk = probs[keep].double()
    exp = pk / pk.sum() * counts.sum().double()
    return float(chisquare(counts[keep].double().numpy(), exp.double().numpy()).pvalue)


@pytest.mark.parametrize("draft_kind", ["point", "model"])
def test_accept_reject_preserves_target_distribution(draft_kind: str) -> None:
    gen = torch.Generator().manual_seed(1234)
    p = processed_probs(torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0],
                                      [0.0, 1.5, 0.2, 2.0, -0.5, 0.1],
                                      [1.0, 1.0, 0.0, 0.0, 0.5, 0.5]]), 1.0, 0, 1.0)  # [k+1=3, V]
    q = torch.softmax(torch.tensor([[0.0, 2.0, 1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 2.0, 0.0]]), -1)  # [2, V]
    first = torch.zeros(V, dtype=torch.long)
    second = torch.zeros(V, V, dtype=torch.long)  # joint of the first two emitted tokens
    for _ in range(TRIALS):
        if draft_kind == "point":  # prompt lookup: fixed proposals, q = one-hot
            draft, qd = [1, 4], None
        else:
            draft = [int(torch.multinomial(q[j], 1, generator=gen)) for j in range(2)]
            qd = q
        out = accept_sampled(p, draft, qd, gen)
        assert 1 <= len(out) <= 3 and out[:-1] == draft[:len(out) - 1]
        first[out[0]] += 1
        if len(out) >= 2 and out[0] == draft[0]:
            second[out[0], out[1]] += 1
    assert _chi2_pvalue(first, p[0]) > 1e-3
    # given the first token equals the draft's, the second follows the target's second-position distribution
    d0 = 1 if draft_kind == "point" else int(second.sum(1).argmax())
    assert second[d0].sum() > 500
    assert _chi2_pvalue(second[d0], p[1]) > 1e-3


def test_accept_reject_detects_a_wrong_rule() -> None:
    """The chi-square check has power: always accepting the proposal would be caught."""
    p = processed_probs(torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]]), 1.0, 0, 1.0)[0]
    counts = torch.zeros(V, dtype=torch.long)
    counts[1] = TRIALS  # what "accept every draft" emits for draft [1]
    with pytest.raises(AssertionError):
        assert _chi2_pvalue(counts + 1, p) > 1e-3


def test_processed_probs_follow_top_k_and_top_p() -> None:
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert processed_probs(logits, 1.0, 2, 1.0)[0, 2:].sum() == 0
    pp = processed_probs(logits, 1.0, 0, 0.5)[0]
    assert pp[0] == 1.0  # the top token alone holds more than half the mass
    nan = processed_probs(torch.tensor([[float("nan"), 1.0, 2.0]]), 1.0, 0, 1.0)[0]
    assert nan.tolist() == [0.0, 0.0, 1.0]


def test_accept_greedy() -> None:
    logits = torch.full((4, 8), -1.0)
    for j, t in enumerate([3, 5, 1, 7]):
        logits[j, t] = 1.0
    assert accept_greedy(logits, [3, 5, 1]) == [3, 5, 1, 7]  # all accepted + bonus
    assert accept_greedy(logits, [3, 2, 1]) == [3, 5]  # second rejected: the target's token replaces it
    assert accept_greedy(logits, [0, 5, 1]) == [3]
