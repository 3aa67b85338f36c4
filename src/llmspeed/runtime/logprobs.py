"""Log-probabilities of tokens under the model's distribution (raw logits, before temperature / top-k / top-p).

Prompt logprobs come from the prefill forward itself (the logits of every prompt position, the same forward
whose last position the sampler reads); generated tokens' logprobs from the very logits the sampler saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CHUNK_ROWS = 256  # positions turned into log-probabilities at a time (bounds the float32 [rows, V] scratch)


@dataclass(frozen=True)
class TokenLogprob:
    """One position: the token that is there, its log-probability, and the `k` most likely tokens."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (token id, logprob), most likely first


def logprobs_of(logits: torch.Tensor, targets: torch.Tensor, k: int) -> list[TokenLogprob]:
    """`logits` [N, V] and the token at each of those positions `targets` [N] -> N TokenLogprobs with the
    top `k` alternatives each (k = 0: none)."""
    out: list[TokenLogprob] = []
    for s in range(0, logits.shape[0], CHUNK_ROWS):
        lp = torch.log_softmax(logits[s:s + CHUNK_ROWS].float(), dim=-1)  # [n, V]
        tg = targets[s:s + CHUNK_ROWS]
        chosen = lp.gather(-1, tg[:, None])[:, 0].tolist()  # [n]
        if k > 0:
            vals, idx = lp.topk(min(k, lp.shape[-1]), dim=-1)  # [n, k]
            tops = [tuple(zip(i, v, strict=True)) for i, v in zip(idx.tolist(), vals.tolist(), strict=True)]
        else:
            tops = [()] * len(chosen)
        out.extend(TokenLogprob(int(t), c, top) for t, c, top in zip(tg.tolist(), chosen, tops, strict=True))
    return out


def prompt_logprobs(logits: torch.Tensor, ids: torch.Tensor, k: int) -> list[TokenLogprob | None]:
    """`logits` [n, V] of the n prompt positions, `ids` [n] the prompt: position i's token scored by the
    logits of position i-1; the first token has no context (None), as in OpenAI's `token_logprobs`."""
    return [None, *logprobs_of(logits[:-1], ids[1:], k)]
