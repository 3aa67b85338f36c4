"""Perplexity with a declared convention.

Convention (what every number in `evaluate` means):
  * N = `max_tokens` is shared EQUALLY by the text's parts (plays, topics, or the one file): part i of k
    contributes its first (N - tokens taken so far) // (k - i) tokens (a short part passes its unused share
    on), tokenized WITHOUT special tokens with a blank line appended; the shares are concatenated in the
    parts' fixed order (so every held-out play is represented, not just the first one);
  * those N tokens are split into NON-OVERLAPPING windows of W tokens (W = 512, or the context window if
    smaller); the last window may be shorter and is dropped if it has fewer than 2 tokens;
  * every window is scored independently from scratch (no BOS, no carried-over context): token t of a
    window is predicted from tokens 0..t-1 of the same window, so each window contributes W - 1 predictions;
  * PPL = exp(mean NLL over all predictions of all windows), natural log.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from llmspeed.data.texts import TextSource

DEFAULT_WINDOW = 512
CONVENTION = ("non-overlapping {window}-token windows over {n} tokens (equal shares of the first tokens of each "
              "part, no BOS, each window scored from scratch, {pred} predicted tokens); PPL = exp(mean NLL)")


@dataclass(frozen=True)
class TokenWindows:
    """The first N tokens of a text source, cut into non-overlapping windows."""

    source: str
    windows: tuple[torch.Tensor, ...]  # each [W] int64 (the last may be shorter)
    window: int
    part_tokens: dict[str, int] = field(default_factory=dict)  # part name -> tokens used from it

    @property
    def n_tokens(self) -> int:
        return sum(int(w.numel()) for w in self.windows)

    @property
    def n_predicted(self) -> int:
        return sum(int(w.numel()) - 1 for w in self.windows)

    def describe(self) -> str:
        return CONVENTION.format(window=self.window, n=self.n_tokens, pred=self.n_predicted)


def token_windows(tokenizer: Any, source: TextSource, max_tokens: int, window: int = DEFAULT_WINDOW) -> TokenWindows:
    """Equal token shares of `source`'s parts (N = `max_tokens` in all), split into non-overlapping windows."""
    if max_tokens < 2:
        raise ValueError(f"max_tokens must be >= 2, got {max_tokens}")
    if window < 2:
        raise ValueError(f"window must be >= 2, got {window}")
    ids: list[int] = []
    used: dict[str, int] = {}
    k = len(source.parts)
    for i, (name, text) in enumerate(source.parts):
        share = (max_tokens - len(ids)) // (k - i)
        if share <= 0:
            continue
        head = text[: 16 * share]  # tokens are >= 1 char: 16 chars/token is plenty, re-read in full if not
        part = tokenizer.encode(head + "\n\n", add_special_tokens=False)
        if len(part) < share and len(head) < len(text):
            part = tokenizer.encode(text + "\n\n", add_special_tokens=False)
        part = part[:share]
        used[name] = len(part)
        ids += part
    wins = [torch.tensor(ids[i: i + window], dtype=torch.long) for i in range(0, len(ids), window)]
    wins = [w for w in wins if w.numel() >= 2]
    if not wins:
        raise ValueError(f"text {source.name!r} has fewer than 2 tokens")
    return TokenWindows(source=source.name, windows=tuple(wins), window=window, part_tokens=used)


def nll_from_logits(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """[T, V] logits and [T] ids -> [T-1] negative log-likelihoods of ids[1:] (float64)."""
    return nll_from_logprobs(F.log_softmax(logits[:-1].float(), dim=-1), ids)


def nll_from_logprobs(lp: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """[T-1, V] log-probs of the predicting positions and [T] ids -> [T-1] NLL of ids[1:] (float64)."""
    return -lp.gather(-1, ids[1:].unsqueeze(-1)).squeeze(-1).double()  # [T-1]


def window_logits(llm: Any, wins: TokenWindows) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(ids [W], logits [W, V] float32) per window, one full causal forward each."""
    for w in wins.windows:
        yield w, llm.logits(w.unsqueeze(0))[0].cpu()


@dataclass
class NLLAccumulator:
    total: float = 0.0
    count: int = 0

    def add(self, nll: torch.Tensor) -> None:
        self.total += float(nll.sum())
        self.count += int(nll.numel())

    @property
    def mean(self) -> float:
        return self.total / max(self.count, 1)

    @property
    def ppl(self) -> float:
        return math.exp(self.mean)


def perplexity(llm: Any, wins: TokenWindows) -> dict[str, Any]:
    """PPL of `llm` on `wins` under the module's convention, with the token accounting."""
    acc = NLLAccumulator()
    for ids, logits in window_logits(llm, wins):
        acc.add(nll_from_logits(logits, ids))
    return ppl_report(acc, wins)


def ppl_report(acc: NLLAccumulator, wins: TokenWindows) -> dict[str, Any]:
    return {"ppl": acc.ppl, "nll": acc.mean, "text": wins.source, "n_tokens": wins.n_tokens,
            "n_predicted": acc.count, "window": wins.window, "n_windows": len(wins.windows),
            "parts": dict(wins.part_tokens), "convention": wins.describe()}
