"""Prompt and generated-token logprobs from the engine: equal to a plain full forward's log_softmax, computed in
the prefill itself, and never read from the prefix cache."""

from __future__ import annotations

import torch

from llmspeed.runtime.logprobs import logprobs_of
from llmspeed.runtime.sequence import SamplingParams


def _reference(llm, ids: list[int]) -> torch.Tensor:
    return torch.log_softmax(llm.logits(torch.tensor([ids]))[0].float(), dim=-1)  # [T, V]


def test_prompt_and_output_logprobs_match_a_full_forward(tiny_llm) -> None:
    eng = tiny_llm.engine
    ids = tiny_llm.tokenizer.encode("To be, or not to be, that is the question: whether")
    seq = eng.make_sequence(ids, SamplingParams(max_new_tokens=4, ignore_eos=True, logprobs=3, prompt_logprobs=2))
    eng.run_until_done([seq])
    assert seq.prompt_logprobs is not None and len(seq.prompt_logprobs) == len(ids)
    assert seq.prompt_logprobs[0] is None
    ref = _reference(tiny_llm, seq.all_ids)  # [T, V]
    for i, tl in enumerate(seq.prompt_logprobs[1:], start=1):
        assert tl.token_id == ids[i]
        assert abs(tl.logprob - float(ref[i - 1, ids[i]])) < 1e-4
        top = ref[i - 1].topk(2)
        assert [t for t, _ in tl.top] == top.indices.tolist()
    assert len(seq.output_logprobs) == len(seq.output_ids) == 4
    for j, tl in enumerate(seq.output_logprobs):
        pos = len(ids) + j - 1
        assert tl.token_id == seq.output_ids[j]
        assert abs(tl.logprob - float(ref[pos, tl.token_id])) < 1e-4
        assert len(tl.top) == 3 and tl.top[0][0] == tl.token_id  # greedy: the sampled token is the most likely
        assert tl.top[0][1] == tl.logprob  # from the same tensor: exactly equal


def test_prompt_logprobs_are_computed_even_when_the_prefix_is_cached(tiny_llm) -> None:
    eng = tiny_llm.engine
    ids = tiny_llm.tokenizer.encode("Now is the winter of our discontent made glorious summer by this sun of York " * 3)
    assert len(ids) > 2 * eng.config.block_size
    warm = eng.make_sequence(ids, SamplingParams(max_new_tokens=1))
    eng.run_until_done([warm])
    hits = eng.stats().prefix_cache_hit_tokens
    seq = eng.make_sequence(ids, SamplingParams(max_new_tokens=1, prompt_logprobs=0))
    eng.run_until_done([seq])
    assert seq.num_cached_prompt == 0 and eng.stats().prefix_cache_hit_tokens == hits
    ref = _reference(tiny_llm, ids)
    got = torch.tensor([tl.logprob for tl in seq.prompt_logprobs[1:]])
    want = ref[:-1].gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
    assert torch.allclose(got, want, atol=1e-4)
    plain = eng.make_sequence(ids, SamplingParams(max_new_tokens=1))  # a plain request still uses the cache
    eng.run_until_done([plain])
    assert plain.num_cached_prompt > 0


def test_a_batch_mixing_logprob_and_plain_prefills_samples_the_same_tokens(tiny_llm) -> None:
    eng = tiny_llm.engine
    a = tiny_llm.tokenizer.encode("Friends, Romans, countrymen")
    b = tiny_llm.tokenizer.encode("Shall I compare thee to a summer's day? Thou art")
    solo = [eng.make_sequence(p, SamplingParams(max_new_tokens=5, ignore_eos=True)) for p in (a, b)]
    for s in solo:
        eng.run_until_done([s])
    mixed = [eng.make_sequence(a, SamplingParams(max_new_tokens=5, ignore_eos=True, prompt_logprobs=1)),
             eng.make_sequence(b, SamplingParams(max_new_tokens=5, ignore_eos=True))]
    eng.run_until_done(mixed)
    assert [s.output_ids for s in mixed] == [s.output_ids for s in solo]
    assert mixed[0].prompt_logprobs is not None and mixed[1].prompt_logprobs is None


def test_logprobs_of_top_k_and_validation() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]])
    out = logprobs_of(logits, torch.tensor([0, 0]), 2)
    assert [t for t, _ in out[0].top] == [2, 1] and out[1].top[0][0] == 0
    assert abs(out[0].logprob - float(torch.log_softmax(logits[0], -1)[0])) < 1e-6
    import pytest

    with pytest.raises(ValueError, match="logprobs"):
        SamplingParams(logprobs=-1)
    with pytest.raises(ValueError, match="prompt_logprobs"):
        SamplingParams(prompt_logprobs=True)  # type: ignore[arg-type]
