"""An lm-eval-style multiple-choice task from a local JSONL file, scored like lm-evaluation-harness's `acc`.

File: one JSON object per line, `{"context": str, "choices": [str, ...], "gold": int}` (blank lines skipped).

Scoring (lm-eval's `multiple_choice` output type with its `hf` backend's tokenization):
  * the continuation of choice c is `target_delimiter + c` (" " by default, lm-eval's default delimiter);
  * trailing whitespace of the context moves to the front of the continuation; the context is tokenized alone and
    context + continuation together (no special tokens), and the continuation's tokens are the whole's tokens past
    the context's (so a token that merges across the boundary is scored as lm-eval scores it);
  * score(c) = sum of log p(continuation token | everything before it), one teacher-forced forward of
    (context + continuation)[:-1], left-truncated to the context window;
  * prediction = argmax of the scores (first on ties), accuracy = mean of (prediction == gold) — lm-eval's `acc`
    (not `acc_norm`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmspeed.util.jsonl import read_objects


@dataclass(frozen=True)
class MCItem:
    context: str
    choices: tuple[str, ...]
    gold: int

    def __post_init__(self) -> None:
        if not self.context.strip():
            raise ValueError("context must be a non-empty string")
        if len(self.choices) < 2 or not all(isinstance(c, str) and c for c in self.choices):
            raise ValueError("choices must be a list of at least 2 non-empty strings")
        if not 0 <= self.gold < len(self.choices):
            raise ValueError(f"gold must index choices (0..{len(self.choices) - 1}), got {self.gold}")


@dataclass(frozen=True)
class MCTask:
    name: str
    items: tuple[MCItem, ...]
    target_delimiter: str = " "

    def __post_init__(self) -> None:
        if not self.items:
            raise ValueError(f"task {self.name}: no items")

    def subset(self, n: int) -> MCTask:
        """`n` items at evenly spaced indices (all of them when the task has at most `n`); deterministic."""
        if n >= len(self.items):
            return self
        if n < 1:
            raise ValueError(f"subset needs n >= 1, got {n}")
        idx = torch.linspace(0, len(self.items) - 1, n).round().long().tolist()
        return MCTask(self.name, tuple(self.items[i] for i in idx), self.target_delimiter)


def load_mc_task(path: str | Path) -> MCTask:
    """Read and validate the JSONL file; ValueError naming `file:line` for the first malformed line."""
    p = Path(path)
    items = []
    for at, obj in read_objects(p, "--task"):
        ctx, choices, gold = obj.get("context"), obj.get("choices"), obj.get("gold")
        if not isinstance(ctx, str):
            raise ValueError(f"{at}: \"context\" must be a string")
        if not isinstance(choices, list):
            raise ValueError(f"{at}: \"choices\" must be a list of strings")
        if not isinstance(gold, int) or isinstance(gold, bool):
            raise ValueError(f"{at}: \"gold\" must be an integer index into choices")
        try:
            items.append(MCItem(ctx, tuple(choices), gold))
        except ValueError as e:
            raise ValueError(f"{at}: {e}") from None
    if not items:
        raise ValueError(f"{p}: no items")
    return MCTask(p.name, tuple(items))


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-eval's HFLM `_encode_pair` makes them (no special tokens)."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    ctx = tokenizer.encode(context, add_special_tokens=False)
    return ctx, whole[len(ctx):]


@torch.inference_mode()
def choice_logprobs(llm: Any, task: MCTask, batch_size: int = 16) -> list[list[float]]:
    """Per item, per choice: the summed log-probability of the choice's continuation given the context."""
    max_len = llm.config.max_position
    reqs: list[tuple[list[int], list[int]]] = []  # (input ids, the continuation ids scored at its end)
    for it in task.items:
        for c in it.choices:
            ctx, cont = encode_pair(llm.tokenizer, it.context, task.target_delimiter + c)
            if not cont:
                raise ValueError(f"task {task.name}: choice {c!r} encodes to no tokens")
            if len(cont) > max_len:
                raise ValueError(f"task {task.name}: choice {c!r} is longer than the context window")
            reqs.append(((ctx + cont)[-(max_len + 1):][:-1], cont))
    scores: list[float] = []
    for b in range(0, len(reqs), batch_size):
        chunk = reqs[b: b + batch_size]
        T = max(len(inp) for inp, _ in chunk)
        ids = torch.zeros(len(chunk), T, dtype=torch.long)  # right-padded: padding never affects earlier positions
        for i, (inp, _) in enumerate(chunk):
            ids[i, : len(inp)] = torch.tensor(inp)
        logp = torch.log_softmax(llm.logits(ids).float(), dim=-1).cpu()  # [b, T, V]
        for i, (inp, cont) in enumerate(chunk):
            pos = torch.arange(len(inp) - len(cont), len(inp))  # the logits that predict each continuation token
            scores.append(float(logp[i, pos, torch.tensor(cont)].sum()))
    out, j = [], 0
    for it in task.items:
        out.append(scores[j: j + len(it.choices)])
        j += len(it.choices)
    return out


def mc_accuracy(llm: Any, task: MCTask, batch_size: int = 16) -> dict[str, Any]:
    """lm-eval's `acc` on the task: {"task_acc", "n_items", "task", "correct"}."""
    lls = choice_logprobs(llm, task, batch_size)
    correct = [_argmax(s) == it.gold for s, it in zip(lls, task.items, strict=True)]
    return {"task_acc": sum(correct) / len(correct), "n_items": len(correct), "task": task.name,
            "correct": correct, "loglikelihoods": lls}


def _argmax(scores: list[float]) -> int:
    """Index of the highest score, the first one on ties (numpy's argmax, as lm-eval uses)."""
    return max(range(len(scores)), key=lambda c: (scores[c], -c))
