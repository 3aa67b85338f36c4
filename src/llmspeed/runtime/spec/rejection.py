"""Accepting proposals: greedy (the longest prefix the target's argmax agrees with) and sampled (Leviathan et al.
2023: accept draft token d with probability min(1, p(d)/q(d)), else sample from norm(max(0, p - q)) and stop;
after k acceptances sample a bonus token from p). The sampled rule emits tokens distributed exactly as sampling
from the target p alone. A prompt-lookup proposal is a point mass: q = one-hot(d)."""

from __future__ import annotations

import torch

from llmspeed.layers.sampler import greedy_finite, greedy_rows


def processed_probs(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """[T, V] logits -> [T, V] float32 probabilities as the sampler draws from them (temperature, then top-k,
    then the top-p nucleus, never emptier than the top token). A degenerate row (NaN/inf, nothing left) becomes a
    point mass on its finite argmax, as the sampler's greedy fallback does."""
    scores = logits.float() / temperature  # [T, V]
    V = scores.shape[-1]
    if 0 < top_k < V:
        kth = torch.topk(scores, top_k, dim=-1).values[:, -1:]  # [T, 1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)  # [T, V]
        ps = torch.softmax(sorted_scores, dim=-1)
        drop = ps.cumsum(-1) - ps >= top_p
        drop[:, 0] = False
        sorted_scores = sorted_scores.masked_fill(drop, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(-1, order, sorted_scores)
    probs = torch.softmax(scores, dim=-1)  # [T, V]
    totals = probs.sum(-1)  # [T]
    bad = ~((totals > 0) & torch.isfinite(totals))
    if bool(bad.any()):
        for t in torch.nonzero(bad).flatten().tolist():
            probs[t] = 0.0
            probs[t, greedy_finite(logits[t])] = 1.0
    return probs


def accept_greedy(logits: torch.Tensor, draft: list[int]) -> list[int]:
    """logits [k+1, V] of the verified positions -> emitted tokens: the drafts the argmax agrees with, then the
    argmax at the first disagreement (or the bonus token after all k)."""
    target = greedy_rows(logits[: len(draft) + 1])  # [k+1] argmax per position (NaN-safe)
    for j, d in enumerate(draft):
        if target[j] != d:
            return [*draft[:j], target[j]]
    return [*draft, target[len(draft)]]


def accept_sampled(p: torch.Tensor, draft: list[int], q: torch.Tensor | None,
                   generator: torch.Generator | None) -> list[int]:
    """p [k+1, V] target probabilities, q [k, V] draft probabilities (None: point masses on `draft`) ->
    emitted tokens by the accept/reject rule; at most k+1 of them, the last one never a draft."""
    for j, d in enumerate(draft):
        pd = float(p[j, d])
        qd = 1.0 if q is None else float(q[j, d])
        u = float(torch.rand((), generator=generator))
        if qd > 0.0 and u * qd < pd:
            continue  # accepted with probability min(1, p/q)
        residual = p[j].clone()  # [V]
        if q is None:
            residual[d] = 0.0
        else:
            residual = (residual - q[j]).clamp_(min=0.0)
        total = float(residual.sum())
        if not total > 0.0:  # p == q exactly: the rejection had probability 0; fall back to p
            residual, total = p[j], float(p[j].sum())
        tok = int(torch.multinomial(residual / total, 1, generator=generator))
        return [*draft[:j], tok]
    tok = int(torch.multinomial(p[len(draft)], 1, generator=generator))
    return [*draft, tok]
