"""One request never fails another: a row whose sampling or forward raises finishes with reason "error";
the other rows of its batch produce exactly the tokens they produce when run without it."""

from __future__ import annotations

import pytest

import llmspeed
from llmspeed.runtime.sequence import SamplingParams, Sequence

PROMPTS = ["Hello there", "Now is the winter of our discontent", "O Romeo, Romeo", "A",
           "Friends, Romans, countrymen", "To be or not", "What light through yonder window", "Alas, poor Yorick"]
NEW = 10


@pytest.fixture()
def llm(tiny_model_dir):
    return llmspeed.load(tiny_model_dir("llama"))  # a fresh engine: empty prefix cache, zeroed stats


def _seqs(llm, prompts: list[str], **kw: object) -> list[Sequence]:
    params = SamplingParams(max_new_tokens=NEW, ignore_eos=True, **kw)  # type: ignore[arg-type]
    return [llm.engine.make_sequence(llm.tokenizer.encode(p), params) for p in prompts]


def _reference(llm, prompts: list[str]) -> list[list[int]]:
    seqs = _seqs(llm, prompts)
    llm.engine.run_until_done(seqs)
    return [s.output_ids for s in seqs]


def test_sampling_error_fails_only_its_row(llm, monkeypatch) -> None:
    import llmspeed.runtime.model_runner as runner

    good = PROMPTS[:7]
    ref = _reference(llm, good)
    poisoned = _seqs(llm, [PROMPTS[7]], seed=123)[0]  # greedy, but it has a generator to recognise it by
    real = runner.sample_batch
    calls: list[int] = []

    def flaky(logits, temps, top_ks, top_ps, gens):  # type: ignore[no-untyped-def]
        calls.append(len(gens))
        if any(g is poisoned.generator for g in gens):
            raise RuntimeError("poisoned row")
        return real(logits, temps, top_ks, top_ps, gens)

    monkeypatch.setattr(runner, "sample_batch", flaky)
    seqs = _seqs(llm, good)
    batch = [*seqs[:3], poisoned, *seqs[3:]]
    llm.engine.run_until_done(batch)
    assert poisoned.finish_reason == "error" and "poisoned row" in (poisoned.error or "")
    assert poisoned.output_ids == []
    assert [s.output_ids for s in seqs] == ref
    assert all(s.finish_reason == "length" for s in seqs)
    assert 8 in calls and calls.count(1) == 8  # the batched call failed, then each row alone
    st = llm.engine.stats()
    assert st.num_failed == 1 and st.kv_blocks_used == 0 and st.num_running == 0
    monkeypatch.setattr(runner, "sample_batch", real)
    assert _reference(llm, good[:1]) == ref[:1]  # the engine carries on


def test_forward_error_is_isolated_by_retrying_rows_one_by_one(llm, monkeypatch) -> None:
    good = PROMPTS[:7]
    ref = _reference(llm, good)
    long_prompt = " ".join(["long"] * 60)
    n_long = len(llm.tokenizer.encode(long_prompt))
    limit = max(len(llm.tokenizer.encode(p)) for p in good) + NEW  # no good row reaches this position
    assert n_long > limit
    real = llm.model.forward
    rows_seen: list[int] = []

    def breaks_on_long_rows(ids, meta, *a, **kw):  # type: ignore[no-untyped-def]
        rows_seen.append(ids.shape[0])
        if int(meta.positions.max()) >= limit:
            raise RuntimeError("kernel failure on this row")
        return real(ids, meta, *a, **kw)

    monkeypatch.setattr(llm.model, "forward", breaks_on_long_rows)
    seqs = _seqs(llm, good)
    poisoned = _seqs(llm, [long_prompt])[0]
    llm.engine.run_until_done([*seqs[:5], poisoned, *seqs[5:]])
    assert poisoned.finish_reason == "error" and "kernel failure" in (poisoned.error or "")
    assert [s.output_ids for s in seqs] == ref
    assert rows_seen[:9] == [8] + [1] * 8  # the batched prefill, then each row alone
    monkeypatch.setattr(llm.model, "forward", real)
    # the failed row's half-written blocks were never published to the prefix cache
    again = _seqs(llm, [long_prompt])[0]
    llm.engine.run_until_done([again])
    assert again.num_cached_prompt == 0 and again.finish_reason == "length"
    assert llm.engine.stats().num_failed == 1 and llm.engine.stats().kv_blocks_used == 0


def test_text_is_detokenized_on_read_not_in_the_step(llm) -> None:
    seq = _seqs(llm, ["To be or"])[0]
    llm.engine.run_until_done([seq])
    assert seq.detokenizer.text == "" and seq.timings.t_post == 0.0  # nobody read it yet
    assert seq.text == llm.tokenizer.decode(seq.output_ids) and seq.timings.t_post > 0.0


@pytest.mark.parametrize(("field", "value"), [("temperature", float("nan")), ("temperature", float("inf")),
                                              ("top_p", float("nan")), ("top_p", -float("inf")),
                                              ("top_p", 0.0), ("temperature", -1e-300), ("seed", 2**64)])
def test_sampling_params_reject_nonfinite_and_out_of_range(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 5e-324), (1.0, 1e-7), (5e-324, 0.9), (1e-6, 1.0)])
def test_tiny_temperature_or_top_p_normalises_to_greedy(temperature: float, top_p: float) -> None:
    p = SamplingParams(temperature=temperature, top_p=top_p, seed=1)
    assert (p.temperature, p.top_p) == (0.0, 1.0)
    assert SamplingParams(temperature=0.5, top_p=0.5).temperature == 0.5  # ordinary values are kept


def test_subnormal_top_p_generates_the_greedy_tokens(llm) -> None:
    greedy = llm.generate(PROMPTS[1], max_new_tokens=NEW, ignore_eos=True)[0].token_ids
    tiny = llm.generate(PROMPTS[1], max_new_tokens=NEW, ignore_eos=True, temperature=1.0, top_p=5e-324, seed=3)
    assert tiny[0].token_ids == greedy and tiny[0].finish_reason == "length"
