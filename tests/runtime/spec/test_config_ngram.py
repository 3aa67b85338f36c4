"""`--draft` parsing and prompt-lookup proposals."""

from __future__ import annotations

import pytest

from llmspeed.runtime.spec.adaptive import AdaptiveK
from llmspeed.runtime.spec.config import DEFAULT_K, DraftConfig, parse_draft
from llmspeed.runtime.spec.ngram import propose_ngram


@pytest.mark.parametrize("spec, kind, k, path", [
    ("ngram", "ngram", DEFAULT_K, ""), ("ngram:3", "ngram", 3, ""), ("NGRAM:12", "ngram", 12, ""),
    ("out/student", "model", DEFAULT_K, "out/student"), ("out/student:4", "model", 4, "out/student"),
])
def test_parse_draft(spec: str, kind: str, k: int, path: str) -> None:
    cfg = parse_draft(spec)
    assert cfg == DraftConfig(kind, k, path=path)


@pytest.mark.parametrize("spec", [None, "", "none", "off"])
def test_parse_draft_off(spec: str | None) -> None:
    assert parse_draft(spec) is None


@pytest.mark.parametrize("spec", ["ngram:0", "ngram:-1", "ngram:x", "ngram:", "ngram:999", "ngramz", "ngram:2.5"])
def test_parse_draft_rejects_bad_k(spec: str) -> None:
    with pytest.raises(ValueError, match="--draft"):
        parse_draft(spec)


def test_ngram_proposes_the_continuation_of_the_latest_match() -> None:
    ids = [1, 2, 3, 4, 5, 9, 2, 3, 7, 8, 6, 6, 2, 3]  # tail (2, 3): matches at 1 and 6; the latest is 6
    assert propose_ngram(ids, 3, n_max=2, n_min=2) == [7, 8, 6]
    assert propose_ngram(ids, 2, n_max=3, n_min=2) == [7, 8]
    assert propose_ngram([1, 2, 3, 4], 3) == []  # nothing recurs
    assert propose_ngram([5, 6, 5, 6], 4, n_max=2, n_min=2) == [5, 6]  # the match's continuation runs to the end
    assert propose_ngram([1, 1, 1, 1, 1, 1], 3, n_max=2, n_min=2) == [1, 1, 1]  # short period: earliest match
    assert propose_ngram([1, 2, 3], 0) == []


def test_adaptive_k_pauses_after_rejections_and_recovers() -> None:
    a = AdaptiveK(8)
    assert a.next_k() == 8
    a.update(8, 0)  # nothing accepted: k halves, one step paused
    assert [a.next_k() for _ in range(2)] == [0, 4]
    a.update(4, 0)  # again: pause doubles
    assert [a.next_k() for _ in range(3)] == [0, 0, 2]
    a.update(2, 2)  # all accepted: k grows back
    assert a.next_k() == 4
    fixed = AdaptiveK(5, adaptive=False)
    fixed.update(5, 0)
    assert fixed.next_k() == 5
