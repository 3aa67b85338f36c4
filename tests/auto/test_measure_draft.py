"""The real measurer with an ngram draft on a tiny model: the draft shares its twin's weights, leaves the original
untouched, is timed on the user's prompts, and the ablation ends with the draft row."""

from __future__ import annotations

import llmspeed
from llmspeed.auto.config import AutoConfig
from llmspeed.auto.measure import LLMMeasurer
from llmspeed.auto.space import Candidate
from llmspeed.auto.workload import WorkPrompt


def test_draft_candidate_is_measured_on_prompts(tiny_model_dir) -> None:
    base = llmspeed.load(tiny_model_dir("llama"))
    prompts = [WorkPrompt("to be or not to be, to be or not to be, to be or", 8)]
    m = LLMMeasurer(base, AutoConfig(new_tokens=8, repeats=1, profile=False), prompts)
    twin, cand = Candidate(steps=("int8",)), Candidate(steps=("int8",), draft="ngram")
    sp = m.speed(cand)
    assert sp["decode_tok_s"] > 0 and sp["prefill_tok_s"] > 0
    built = m.build(cand)
    assert built.draft is not None and built.draft.kind == "ngram" and base.draft is None
    assert built.recipe == ["int8"]
    rows = m.benchmark([Candidate(), twin, cand])
    assert len(rows) == 3 and all(r["decode_tok_s"] > 0 for r in rows)
    abl = m.ablation(cand)
    assert [r["added"] for r in abl] == ["original", "int8", "draft ngram"]
    assert abl[-1]["recipe"] == "int8" and base.draft is None and base.recipe == []
    assert m.build(Candidate(draft="ngram")).model is base.model  # the original drafting: same weights, no copy
