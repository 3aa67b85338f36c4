"""A timed speed run never contains a compile: every KV-length bucket its decode steps visit is built before."""

from __future__ import annotations

import dataclasses

from llmspeed.bench.quick import decode_buckets, warm_decode_buckets
from llmspeed.runtime.compiled import CompileConfig


def test_buckets_visited(tiny_llm) -> None:
    assert decode_buckets(tiny_llm, [(10, 20)]) == []  # eager: nothing to build
    tiny_llm.options = dataclasses.replace(tiny_llm.options, compile=CompileConfig(bucket=16))
    # KV lengths 11..30 -> buckets 16, 32; 31..34 -> 32, 48; a request inside one bucket visits one
    assert decode_buckets(tiny_llm, [(10, 20)]) == [16, 32]
    assert decode_buckets(tiny_llm, [(10, 20), (30, 4)]) == [16, 32, 48]
    assert decode_buckets(tiny_llm, [(16, 16)]) == [32]


def test_warm_up_lands_in_each_bucket(tiny_llm, monkeypatch) -> None:
    tiny_llm.options = dataclasses.replace(tiny_llm.options, compile=CompileConfig(bucket=16))
    seen: list[tuple[int, int]] = []

    def generate(texts, max_new_tokens, ignore_eos):
        seen.append((len(texts), len(tiny_llm.tokenizer.encode(texts[0]))))
        return []

    monkeypatch.setattr(tiny_llm, "generate", generate)
    warm_decode_buckets(tiny_llm, [(10, 30)], batch=4)
    assert [b for b, _ in seen] == [4, 4, 4]
    for (_, n), sb in zip(seen, [16, 32, 48], strict=True):  # the first decode step's KV length n + 1 is in sb
        assert sb - 16 < n + 1 <= sb
