"""LAMBADA-style last-word accuracy on held-out Shakespeare passages.

Definition (exact):
  * Candidates: in the held-out plays (`datasets.EVAL_PLAYS`, never calibration plays), every word of
    >= 4 ASCII letters that ends a sentence (is directly followed by `.`, `!` or `?`), is preceded by a
    space (not the first word of a line) and sits on a line of >= 4 words (so speaker tags such as
    "Ham." never count). Of all candidates, in play order, `n` are taken at evenly spaced indices.
  * Passage: the text before the word (trailing whitespace removed), tokenized without special tokens and
    LEFT-truncated to its last `context_tokens` tokens. Target: the tokens of " " + word.
  * A passage is correct iff greedy decoding after the passage reproduces every target token. Greedy
    decoding emits target token i iff argmax p(· | passage, target[:i]) == target[i], so this is checked
    with one teacher-forced forward per passage (batched, right-padded; padding never affects earlier
    positions under the causal mask). What the model would emit after the word is not checked.
  * Accuracy = correct / n.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from llmspeed.data.texts import EVAL_PLAYS, read_play

_WORD_END = re.compile(r"(?<= )([A-Za-z]{4,})(?=[.!?])")


@dataclass(frozen=True)
class Passage:
    context: tuple[int, ...]  # last `context_tokens` tokens before the word
    target: tuple[int, ...]  # tokens of " " + word
    word: str
    play: str


def _candidates(plays: tuple[str, ...]) -> list[tuple[str, str, int, str]]:
    """(play, text, char offset of the word, word) for every candidate, in play order."""
    out = []
    for play in plays:
        text = read_play(play)
        pos = 0
        for line in text.splitlines(keepends=True):
            if len(line.split()) >= 4 and not line.lstrip().startswith("["):
                out += [(play, text, pos + m.start(1), m.group(1)) for m in _WORD_END.finditer(line)]
            pos += len(line)
    return out


def lastword_passages(tokenizer: Any, n: int = 300, context_tokens: int = 64,
                      plays: tuple[str, ...] = EVAL_PLAYS) -> list[Passage]:
    """`n` passages spread evenly over the held-out plays (deterministic)."""
    if n <= 0 or context_tokens <= 0:
        raise ValueError(f"n and context_tokens must be > 0, got {n}, {context_tokens}")
    cands = _candidates(plays)
    if len(cands) < n:
        raise ValueError(f"only {len(cands)} last-word candidates in {plays}, asked for {n}")
    idx = torch.linspace(0, len(cands) - 1, n).round().long().tolist()
    out = []
    for i in idx:
        play, text, start, word = cands[i]
        ctx_text = text[max(0, start - 8 * context_tokens): start].rstrip()
        ctx = tokenizer.encode(ctx_text, add_special_tokens=False)[-context_tokens:]
        tgt = tokenizer.encode(" " + word, add_special_tokens=False)
        out.append(Passage(tuple(ctx), tuple(tgt), word, play))
    return out


def lastword_correct(llm: Any, passages: list[Passage], batch_size: int = 16) -> torch.Tensor:
    """[n] bool: greedy decoding reproduces each passage's last word (teacher-forced check, see module doc)."""
    out = []
    for b in range(0, len(passages), batch_size):
        chunk = passages[b: b + batch_size]
        rows = [list(p.context) + list(p.target) for p in chunk]
        T = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), T, dtype=torch.long)  # [b, T] right-padded with token 0
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        pred = llm.logits(ids).argmax(-1).cpu()  # [b, T]: greedy next token after each position
        for i, p in enumerate(chunk):
            c, k = len(p.context), len(p.target)
            out.append(bool((pred[i, c - 1: c - 1 + k] == ids[i, c: c + k]).all()))
    return torch.tensor(out, dtype=torch.bool)


def lastword_accuracy(llm: Any, passages: list[Passage], batch_size: int = 16) -> dict[str, Any]:
    return lastword_report(passages, lastword_correct(llm, passages, batch_size))


def lastword_report(passages: list[Passage], correct: torch.Tensor) -> dict[str, Any]:
    """The last-word metrics from the per-passage flags (computed here or by data-parallel workers)."""
    plays = sorted({p.play for p in passages})
    return {"lastword_accuracy": float(correct.float().mean()), "n_passages": len(passages),
            "context_tokens": max(len(p.context) for p in passages),
            "mean_target_tokens": sum(len(p.target) for p in passages) / len(passages), "plays": plays,
            "correct": correct}
