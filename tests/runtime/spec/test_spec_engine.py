"""Speculative decoding in the engine: greedy output identical to plain decoding (a property over random seeds,
k and batch mixes), rollback leaves the KV cache / blocks / prefix index as if the rejected tokens were never
written, and a draft with another vocabulary is refused."""

from __future__ import annotations

import random

import pytest
import torch
from tests.conftest import build_tiny_hf, shakespeare_text

import llmspeed
from llmspeed.runtime.engine import Engine, EngineConfig
from llmspeed.runtime.sequence import SamplingParams
from llmspeed.runtime.spec.config import DraftConfig

TEXT = shakespeare_text(20_000)


def _prompts(rng: random.Random, n: int) -> list[str]:
    """Mixed prompts: some repeat a passage (prompt lookup finds matches), some do not."""
    out = []
    for _ in range(n):
        a = rng.randrange(0, len(TEXT) - 400)
        passage = TEXT[a:a + rng.randrange(40, 200)]
        out.append(f"{passage}\n{passage[: rng.randrange(5, 30)]}" if rng.random() < 0.6 else passage)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_greedy_speculative_equals_plain_property(tiny_model_dir, seed: int) -> None:
    rng = random.Random(seed)
    llm = llmspeed.load(tiny_model_dir("llama"))
    prompts = _prompts(rng, rng.randrange(1, 6))
    n = rng.randrange(8, 40)
    ignore = rng.random() < 0.5
    plain = llm.generate(prompts, max_new_tokens=n, ignore_eos=ignore)
    k = rng.randrange(1, 10)
    llm.set_draft(DraftConfig("ngram", k, adaptive=rng.random() < 0.5, ngram_min=rng.choice([1, 2])))
    spec = llm.generate(prompts, max_new_tokens=n, ignore_eos=ignore)
    for a, b in zip(plain, spec, strict=True):
        assert b.token_ids == a.token_ids and b.finish_reason == a.finish_reason
    st = llm.engine.stats()
    assert st.spec_accepted_tokens <= st.spec_draft_tokens


def test_draft_and_plain_requests_share_a_batch(tiny_model_dir) -> None:
    """Requests with drafts (a repeated passage) and without (short, no repeats) in one running batch, with
    different lengths, arriving at different steps."""
    llm = llmspeed.load(tiny_model_dir("llama"))
    prompts = ["O Romeo, Romeo, wherefore art thou Romeo? O Romeo, Romeo, wherefore", "A", "Hello there",
               TEXT[:300] + "\n" + TEXT[:40]]
    plain = [llm.generate(p, max_new_tokens=30, ignore_eos=True)[0].token_ids for p in prompts]
    llm.set_draft("ngram:5")
    eng = llm.engine
    params = SamplingParams(max_new_tokens=30, ignore_eos=True)
    seqs = [eng.make_sequence(llm.tokenizer.encode(p), params) for p in prompts]
    eng.add(seqs[0])
    eng.add(seqs[1])
    eng.step()
    eng.step()
    eng.add(seqs[2])
    eng.add(seqs[3])
    mixed = 0
    while any(not s.finished for s in seqs):
        eng.step()
        running = [s for s in seqs if not s.finished]
        mixed += len(running) > 1 and any(s.num_verifies for s in running)
    assert [s.output_ids for s in seqs] == plain
    assert eng.stats().spec_accepted_tokens > 0 and mixed > 0


def test_draft_model_greedy_equals_plain(tiny_model_dir) -> None:
    target = tiny_model_dir("llama")
    llm = llmspeed.load(target)
    prompts = ["To be, or not to be", "Now is the winter of our discontent"]
    plain = llm.generate(prompts, max_new_tokens=20, ignore_eos=True)
    for draft, min_rate in ((f"{tiny_model_dir('llama', seed=1)}:3", 0.0), (f"{target}:4", 0.99)):
        llm.set_draft(draft)  # another model (mostly rejected), then the target itself (always accepted)
        spec = llm.generate(prompts, max_new_tokens=20, ignore_eos=True)
        assert [o.token_ids for o in spec] == [o.token_ids for o in plain]
        st = llm.engine.stats()
        assert st.spec_draft_tokens > 0 and st.spec_acceptance_rate >= min_rate
    sampled = llm.generate(prompts, max_new_tokens=12, temperature=0.8, seed=5, ignore_eos=True)
    assert all(len(o.token_ids) == 12 for o in sampled)
    assert llm.engine.spec is not None and not llm.engine.spec.draft.views  # type: ignore[union-attr]


def test_rollback_leaves_cache_as_if_rejected_tokens_never_written(tiny_model_dir, monkeypatch) -> None:
    """Proposals of 2 right tokens then 3 wrong ones: after every verify step the sequence's valid K/V equals a
    plain engine's at the same length, slots past it are zero, and block table, free blocks and prefix index
    match the plain engine's."""
    import llmspeed.runtime.spec.decoder as dec

    llm = llmspeed.load(tiny_model_dir("llama"))
    prompt = llm.tokenizer.encode("Friends, Romans, countrymen, lend me your ears; I come to bury Caesar")
    ref = llm.generate_tokens([prompt], max_new_tokens=40, ignore_eos=True)[0].token_ids
    bad = (max(ref) + 1) % 512

    def fake(ids: list[int], k: int, *_: object) -> list[int]:
        done = len(ids) - len(prompt)
        return (ref[done:done + 2] + [bad] * 3)[:k]

    monkeypatch.setattr(dec, "propose_ngram", fake)
    cfg = EngineConfig(kv_cache_tokens=512, block_size=4)  # small blocks: drafts cross block boundaries
    spec_eng = Engine(llm.model, llm.tokenizer, cfg, draft=DraftConfig("ngram", 5, adaptive=False))
    plain_eng = Engine(llm.model, llm.tokenizer, cfg)
    params = SamplingParams(max_new_tokens=40, ignore_eos=True)
    s, p = spec_eng.make_sequence(prompt, params), plain_eng.make_sequence(prompt, params)
    spec_eng.add(s)
    plain_eng.add(p)
    checks = 0
    while not s.finished:
        spec_eng.step()
        while len(p.output_ids) < len(s.output_ids):
            plain_eng.step()
        if s.finished:
            break
        assert s.output_ids == p.output_ids
        assert s.num_computed == p.num_computed
        assert len(s.block_table) == len(p.block_table)
        assert spec_eng.scheduler.pool.num_free == plain_eng.scheduler.pool.num_free
        assert spec_eng.scheduler.pool.by_hash.keys() == plain_eng.scheduler.pool.by_hash.keys()
        n = s.num_computed
        for (sk, sv), (pk, pv) in zip(spec_eng.kv.layers, plain_eng.kv.layers, strict=True):
            ss = torch.tensor(spec_eng.kv.slots_for(s.block_table, 0, n))
            ps = torch.tensor(plain_eng.kv.slots_for(p.block_table, 0, n))
            torch.testing.assert_close(sk[:, ss], pk[:, ps], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(sv[:, ss], pv[:, ps], atol=1e-5, rtol=1e-4)
            rest = torch.tensor(spec_eng.kv.slots_for(s.block_table, n, len(s.block_table) * cfg.block_size),
                                dtype=torch.long)
            assert not sk[:, rest].any() and not sv[:, rest].any()  # rejected (and unwritten) slots are zero
        checks += 1
    assert s.output_ids == ref and checks >= 5
    st = spec_eng.stats()
    assert st.spec_draft_tokens > 0 and 0.3 < st.spec_acceptance_rate < 0.5  # 2 of 5 accepted per pass
    assert spec_eng.scheduler.pool.num_free == len(spec_eng.scheduler.pool.blocks)  # all given back


def test_draft_with_another_vocabulary_is_refused(tiny_model_dir, tiny_tokenizer_json, tmp_path) -> None:
    other = build_tiny_hf(tmp_path / "v600", "llama", tiny_tokenizer_json, vocab_size=600)
    llm = llmspeed.load(tiny_model_dir("llama"))
    with pytest.raises(ValueError, match="another tokenizer or vocabulary"):
        llm.set_draft(str(other))
    with pytest.raises(ValueError, match="another tokenizer or vocabulary"):
        llmspeed.load(tiny_model_dir("llama"), draft=str(other))
    assert llm.draft is None  # unchanged
