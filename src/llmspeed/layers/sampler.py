"""Token sampling: greedy, temperature, top-k, top-p, per-request seeded generators.

NaN-safe, row by row: a row whose distribution is degenerate (a NaN or +-inf logit where the argmax
lands, NaN/inf scores after temperature scaling, or nothing left to sample after top-k/top-p: all-zero
or NaN probabilities) falls back to greedy over that row's finite logits; the other rows of the batch
are untouched. A row without a single finite logit raises ValueError (there is no token to choose).
"""

from __future__ import annotations

import torch


def greedy_finite(logits: torch.Tensor) -> int:
    """Argmax over the finite entries of one row [V] (NaN and +-inf ignored)."""
    finite = torch.isfinite(logits)
    if not bool(finite.any()):
        raise ValueError("no finite logit in this row: cannot choose a token")
    return int(torch.where(finite, logits, float("-inf")).argmax())


def greedy_rows(logits: torch.Tensor) -> list[int]:  # logits [B, V]
    idx = torch.argmax(logits, dim=-1)  # [B]; torch's argmax lands on a NaN when a row has one
    best = logits.gather(-1, idx[:, None])  # [B, 1]
    if bool(torch.isfinite(best).all()):
        return idx.tolist()  # one host sync for the whole batch
    return [greedy_finite(logits[i]) if not torch.isfinite(best[i, 0]) else int(idx[i]) for i in range(len(idx))]


def sample_one(
    logits: torch.Tensor,  # [V] float32
    temperature: float,
    top_k: int,
    top_p: float,
    generator: torch.Generator | None,
) -> int:
    if temperature <= 0.0:
        return greedy_rows(logits[None])[0]
    scores = logits.float() / temperature  # [V]
    if 0 < top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True)  # [V]
        probs_sorted = torch.softmax(sorted_scores, dim=-1)
        drop = probs_sorted.cumsum(-1) - probs_sorted >= top_p  # keep the smallest set reaching top_p
        drop[0] = False  # ... and never less than the top token (top_p may round to 0 in float32)
        sorted_scores = sorted_scores.masked_fill(drop, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(0, order, sorted_scores)
    probs = torch.softmax(scores, dim=-1)  # [V]
    total = float(probs.sum())
    if not 0.0 < total < float("inf"):  # NaN (nan/inf scores, or nothing left) -> degenerate: greedy
        return greedy_finite(logits)
    if generator is not None and generator.device != probs.device:
        probs = probs.to(generator.device)  # a seeded request draws where its generator lives: same tokens anywhere
    return int(torch.multinomial(probs, 1, generator=generator))


def sample_batch(
    logits: torch.Tensor,  # [B, V]
    temperatures: list[float],
    top_ks: list[int],
    top_ps: list[float],
    generators: list[torch.Generator | None],
) -> list[int]:
    if all(t <= 0.0 for t in temperatures):
        return greedy_rows(logits)
    return [sample_one(logits[i], temperatures[i], top_ks[i], top_ps[i], generators[i]) for i in range(len(temperatures))]
