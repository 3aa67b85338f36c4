"""The real measurer with a multiple-choice task file: the slice scores evenly spaced items, the full eval every
item, the original's accuracy is measured once per size, and the figures are lm-eval's `acc`."""

from __future__ import annotations

import json
from pathlib import Path

import llmspeed
from llmspeed.auto.config import AutoConfig, Criteria
from llmspeed.auto.measure import LLMMeasurer
from llmspeed.auto.space import Candidate
from llmspeed.evaluation.mctask import load_mc_task, mc_accuracy


def test_task_accuracy_on_slice_and_full(tiny_model_dir, tmp_path: Path, monkeypatch) -> None:
    rows = [{"context": f"Line {i} of the play, and then the", "choices": ["king", "queen", "fool"], "gold": i % 3}
            for i in range(7)]
    p = tmp_path / "t.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_mc_task(p)
    base = llmspeed.load(tiny_model_dir("llama"))
    cfg = AutoConfig(criteria=Criteria(max_ppl_increase=None, min_task_acc=0.0, task=str(p)), screen_eval_tokens=64,
                     full_eval_tokens=128, screen_task_n=3, profile=False)
    m = LLMMeasurer(base, cfg, None, task)
    calls = []
    import llmspeed.evaluation.mctask as mct

    real = mct.mc_accuracy
    monkeypatch.setattr(mct, "mc_accuracy", lambda llm, t, *a: calls.append(len(t.items)) or real(llm, t, *a))
    cand = Candidate(steps=("int8",))
    s1, s2 = m.screen(cand)["quality"], m.screen(cand)["quality"]
    assert s1["task_n"] == 3 and s1["task"] == "t.jsonl" and s1 == s2
    full = m.confirm(cand)
    assert full["task_n"] == 7
    assert full["baseline_task_acc"] == mc_accuracy(base, task)["task_acc"]
    assert full["task_acc"] == mc_accuracy(m.build(cand), task)["task_acc"]
    assert calls == [3, 3, 3, 7, 7]  # the original once per size (slice, full), the candidate each time
    assert "lastword" not in json.dumps(full)
