"""Speculative ngram drafts in the search (stub measurer): only for `decode` with the user's prompts, speed measured,
accuracy reused from the same candidate without the draft (never re-evaluated), over-budget twins stay over."""

from __future__ import annotations

import json
from pathlib import Path

from llmspeed.auto.api import auto
from llmspeed.auto.search import ACCEPTED, OVER
from llmspeed.auto.workload import WorkPrompt
from tests.auto.conftest import StubMeasurer

PROMPTS = [WorkPrompt("Summarize: the quick brown fox jumps over the lazy dog.", 16)]


def run(stub: StubMeasurer, **kw):
    kw = {"budget_minutes": 600.0, "max_trials": 12} | kw
    return auto(None, measurer=stub, clock=stub.clock, **kw)


def drafted(res) -> list[dict]:
    return [r for r in res.trials if r["candidate"].get("draft")]


def test_drafts_only_for_decode_with_prompts() -> None:
    for kw in ({}, {"objective": "throughput", "prompts": PROMPTS}, {"objective": "prefill", "prompts": PROMPTS}):
        stub = StubMeasurer()
        res = run(stub, **kw)
        assert not drafted(res) and not stub.sped, kw


def test_draft_reuses_the_twins_accuracy_and_is_chosen(tmp_path: Path) -> None:
    stub = StubMeasurer()
    res = run(stub, prompts=PROMPTS, out=tmp_path / "o")
    ds = drafted(res)
    assert ds and len(res.trials) <= 12
    by_key = {r["key"]: r for r in res.trials}
    for r in ds:
        twin = by_key[r["quality_from"]]
        assert r["candidate"]["draft"] == "ngram" and twin["candidate"]["steps"] == r["candidate"]["steps"]
        assert r["screen"]["quality"] == twin["screen"]["quality"]  # reused, not re-evaluated
        assert r["key"] in stub.sped and r["key"] not in stub.screened and r["key"] not in stub.confirmed
    assert any(r["source"] == "original+draft" for r in ds)  # the original with a draft: lossless
    assert res.accepted and res.draft == "ngram" and "--draft ngram" in res.message
    chosen = res.chosen
    assert chosen["full"] == by_key[chosen["quality_from"]]["full"]
    assert [row["added"] for row in res.ablation][-1] == "draft ngram"
    assert res.ablation[-1]["T"] < res.ablation[-2]["T"]
    doc = json.loads((tmp_path / "o" / "trials.json").read_text())
    assert doc["draft"] == "ngram"


def test_over_budget_twin_makes_its_draft_over_budget() -> None:
    """int4 passes the slice but not the full eval: its draft variant is over budget too (same accuracy)."""
    stub = StubMeasurer(full_extra=lambda c: 0.05 if any(t.startswith("int4") for t in c.steps) else 0.0)
    res = run(stub, prompts=PROMPTS, max_trials=14)
    int4_drafts = [r for r in drafted(res) if any(t.startswith("int4") for t in r["candidate"]["steps"])]
    assert int4_drafts
    for r in int4_drafts:
        assert r["status"] in (OVER, "survivor")
    assert res.accepted and not any(t.startswith("int4") for t in res.chosen["candidate"]["steps"])
    assert all(r["status"] != ACCEPTED or max(r["full_excess"].values()) <= 1.0 for r in res.trials)
    assert not set(stub.confirmed) & {r["key"] for r in drafted(res)}


def test_resume_reuses_draft_trials(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = StubMeasurer()
    run(first, prompts=PROMPTS, out=out)
    second = StubMeasurer()
    run(second, prompts=PROMPTS, out=out, resume=True)
    assert second.screened == [] and second.sped == [] and second.confirmed == []
