"""The local multiple-choice task: loader errors, the scorer against a naive per-item recompute, and against
lm-evaluation-harness's own `hf` backend (HFLM.loglikelihood) on the same tiny weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llmspeed.evaluation.mctask import MCItem, MCTask, choice_logprobs, load_mc_task, mc_accuracy

ITEMS = [
    {"context": "To be, or not to be, that is the", "choices": ["question", "answer", "problem"], "gold": 0},
    {"context": "Friends, Romans, countrymen, lend me your", "choices": ["ears", "eyes", "hands, good sirs"],
     "gold": 0},
    {"context": "Now is the winter of our ", "choices": ["discontent", "content"], "gold": 1},  # trailing space
    {"context": "A horse! a horse! my kingdom for a", "choices": ["horse", "crown", "sword"], "gold": 2},
    {"context": "Q: 2+2=\nA:", "choices": ["4", "5", "22"], "gold": 0},
]


def write(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_load_and_subset(tmp_path: Path) -> None:
    task = load_mc_task(write(tmp_path / "t.jsonl", [*ITEMS[:2], "", *ITEMS[2:]]))
    assert task.name == "t.jsonl" and len(task.items) == 5
    assert task.items[1] == MCItem("Friends, Romans, countrymen, lend me your", ("ears", "eyes", "hands, good sirs"),
                                   0)
    assert task.subset(3).items == (task.items[0], task.items[2], task.items[4])  # evenly spaced
    assert task.subset(99) is task


@pytest.mark.parametrize("line, needle", [
    ("not json", "not a JSON object"),
    ("[1, 2]", "not a JSON object"),
    ('{"choices": ["a", "b"], "gold": 0}', '"context" must be a string'),
    ('{"context": "x", "choices": "ab", "gold": 0}', '"choices" must be a list'),
    ('{"context": "x", "choices": ["a", "b"], "gold": "0"}', '"gold" must be an integer'),
    ('{"context": "x", "choices": ["a", "b"], "gold": 2}', "gold must index choices"),
    ('{"context": "x", "choices": ["a"], "gold": 0}', "at least 2"),
    ('{"context": "x", "choices": ["a", ""], "gold": 0}', "at least 2 non-empty"),
    ('{"context": "  ", "choices": ["a", "b"], "gold": 0}', "context must be a non-empty"),
])
def test_malformed_lines_name_file_and_line(tmp_path: Path, line: str, needle: str) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(ITEMS[0]) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2") as e:
        load_mc_task(p)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_missing_or_empty_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--task file not found"):
        load_mc_task(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="no items"):
        load_mc_task(write(tmp_path / "e.jsonl", [""]))


def _naive(llm, item: MCItem) -> list[float]:
    """Each choice alone: tokenize context and context + " " + choice (lm-eval's boundary rule), one forward of the
    whole, add the log-probs of the tokens past the context."""
    out = []
    for c in item.choices:
        ctx_text, cont_text = item.context, " " + c
        stripped = ctx_text.rstrip()
        cont_text, ctx_text = ctx_text[len(stripped):] + cont_text, stripped
        ctx = llm.tokenizer.encode(ctx_text, add_special_tokens=False)
        whole = llm.tokenizer.encode(ctx_text + cont_text, add_special_tokens=False)
        logp = torch.log_softmax(llm.logits(torch.tensor([whole])).float()[0], -1)
        out.append(sum(float(logp[t - 1, whole[t]]) for t in range(len(ctx), len(whole))))
    return out


def test_scorer_matches_a_naive_recompute(tiny_llm, tmp_path: Path) -> None:
    task = load_mc_task(write(tmp_path / "t.jsonl", ITEMS))
    got = choice_logprobs(tiny_llm, task, batch_size=4)  # batches cut across items, right-padded
    for item, row in zip(task.items, got, strict=True):
        want = _naive(tiny_llm, item)
        assert len(row) == len(item.choices)
        assert max(abs(a - b) for a, b in zip(row, want, strict=True)) < 1e-4, (row, want)
    r = mc_accuracy(tiny_llm, task)
    pred = [max(range(len(s)), key=lambda i, s=s: s[i]) for s in got]
    assert r["task_acc"] == sum(p == it.gold for p, it in zip(pred, task.items, strict=True)) / len(task.items)
    assert r["n_items"] == 5 and len({round(x, 4) for row in got for x in row}) > 5


def test_ties_go_to_the_first_choice() -> None:
    from llmspeed.evaluation.mctask import _argmax

    assert _argmax([-1.0, -0.5, -0.5]) == 1 and _argmax([0.0, 0.0]) == 0


def test_matches_lm_eval_hf_backend(tiny_model_dir, tiny_llm, monkeypatch: pytest.MonkeyPatch) -> None:
    """lm-eval's HFLM.loglikelihood on the same tiny HF weights: every per-choice score within 1e-3."""
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    task = MCTask("t", tuple(MCItem(d["context"], tuple(d["choices"]), d["gold"]) for d in ITEMS))
    lm = HFLM(pretrained=str(tiny_model_dir("llama")), dtype="float32", device="cpu", batch_size=4)
    reqs = [Instance("loglikelihood", doc={}, arguments=(it.context, " " + c), idx=i)
            for it in task.items for i, c in enumerate(it.choices)]
    theirs = [float(ll) for ll, _ in lm.loglikelihood(reqs)]
    ours = [x for row in choice_logprobs(tiny_llm, task) for x in row]
    assert len(ours) == len(theirs)
    assert max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) < 1e-3, (ours, theirs)
