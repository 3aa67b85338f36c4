"""Parallel tokenization: every method gives the same ids as one process, in order."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmspeed.profiling.preprocess import PreprocessConfig, tokenize_many


def test_methods_agree(tiny_tokenizer_json: Path) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tiny_tokenizer_json))
    texts = [f"To be, or not to be, that is question number {i}." * (1 + i % 3) for i in range(40)]
    ref = tokenize_many(tok, texts, PreprocessConfig(method="serial"))
    assert ref[0] == tok.encode(texts[0], add_special_tokens=False).ids
    assert tokenize_many(tok, texts, PreprocessConfig(method="batch")) == ref
    assert tokenize_many(tok, texts, PreprocessConfig(method="pool", workers=2, chunk_size=7)) == ref
    assert tokenize_many(tok, texts) == ref and tokenize_many(tok, []) == []


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="unknown tokenization method"):
        PreprocessConfig(method="gpu")
    with pytest.raises(ValueError):
        PreprocessConfig(workers=-1)
