"""Prompts of a given token length, built from a fixed English filler (no data files needed)."""

from __future__ import annotations

from typing import Any

FILLER = (
    "The history of computing is a story of people finding faster ways to do arithmetic. Early machines "
    "were built from gears and levers; later ones from relays, vacuum tubes and finally transistors etched "
    "into silicon. Each step made memory larger and cheaper, yet the time needed to move data from memory "
    "to the processor shrank far more slowly than the time needed to compute on it. Programmers learned to "
    "keep their working sets small, to reuse what was already close at hand, and to measure before guessing. "
)


def prompt_ids(tokenizer: Any, n_tokens: int, seed_text: str = FILLER) -> list[int]:
    """Exactly `n_tokens` token ids of filler text."""
    if n_tokens <= 0:
        raise ValueError(f"prompt length must be > 0, got {n_tokens}")
    text = seed_text
    ids = tokenizer.encode(text)
    while len(ids) < n_tokens:
        text += seed_text
        ids = tokenizer.encode(text)
    return ids[:n_tokens]


def prompt_text(tokenizer: Any, n_tokens: int) -> tuple[str, int]:
    """Filler text of about `n_tokens` tokens (decoding a prefix and re-encoding can shift by a token or two);
    returns the text and its actual token count."""
    text = tokenizer.decode(prompt_ids(tokenizer, n_tokens))
    return text, len(tokenizer.encode(text))
