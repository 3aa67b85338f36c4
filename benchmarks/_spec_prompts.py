"""Prompt set for benchmarks/speculative.py, built offline: input-grounded tasks (repeat, extract from or edit a
given passage; passages from the Shakespeare plays and CPython's pydoc topics) and a few open-ended prompts."""

from __future__ import annotations

import re

PLAYS = ("hamlet", "macbeth", "tempest", "othello", "lear", "julius_caesar", "twelfth_night")
TOPICS = ("assert", "break", "continue", "del", "for", "global", "if", "lambda", "pass", "return", "while",
          "with", "yield", "raise", "booleans", "exceptions", "truth", "dict")
OPEN_ENDED = (
    "Write a short story about a dragon who learns to cook.",
    "Give me three ideas for a child's birthday party, with a sentence on each.",
    "Why do people enjoy travelling? Answer in a short paragraph.",
    "Describe a rainy afternoon in a small town.",
    "What are some good habits for staying healthy?",
    "Invent a new board game and explain its rules briefly.",
)


def _words(text: str, n: int) -> str:
    """The first ~n words of text, ended at a sentence or line break where one is near."""
    toks = re.split(r"(\s+)", text.strip())
    out = "".join(toks[: 2 * n]).rstrip()
    cut = max(out.rfind(". "), out.rfind(".\n"), out.rfind("\n"))
    return out[: cut + 1] if cut > len(out) // 2 else out


def play_passage(play: str, i: int, words: int = 90) -> str:
    from llmspeed.data.texts import read_play

    text = read_play(play)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    start = len(lines) // 4 + 37 * i
    return _words("\n".join(lines[start:start + 40]), words)


def topic_passage(name: str, words: int = 90) -> str:
    from pydoc_data.topics import topics

    return _words(topics[name], words)


def grounded_prompts(n: int) -> list[tuple[str, str]]:
    """(kind, prompt) pairs; kinds cycle through repeat / edit / extract / regenerate."""
    topics = [topic_passage(t) for t in TOPICS]
    plays = [play_passage(p, i) for i, p in enumerate(PLAYS)]
    passages = [x for pair in zip(topics, plays, strict=False) for x in pair] + topics[len(plays):]  # mixed
    out: list[tuple[str, str]] = []
    for i, p in enumerate(passages):
        kind = ("repeat", "edit", "extract", "regenerate")[i % 4]
        if kind == "repeat":
            q = f"Repeat the following text exactly, word for word:\n\n{p}"
        elif kind == "edit":
            word = max(re.findall(r"[A-Za-z]{4,}", p) or ["the"], key=p.count)
            q = f"Copy the text below, but replace every \"{word}\" with \"{word.upper()}\":\n\n{p}"
        elif kind == "extract":
            q = f"Here is a passage:\n\n{p}\n\nQuote its first three sentences exactly."
        else:
            q = f"Fix any typos in this text and return the whole corrected text:\n\n{p}"
        out.append((kind, q))
    return out[:n]


def open_prompts(n: int) -> list[tuple[str, str]]:
    return [("open", p) for p in OPEN_ENDED[:n]]
