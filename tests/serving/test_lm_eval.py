"""lm-evaluation-harness end to end: its `local-completions` backend (defaults: tokenized_requests=True, batched
token-id prompts, echo + logprobs, max_tokens 1) against the server scores a local multiple-choice task exactly
as its own `hf` backend does on the same weights: per-choice loglikelihoods within 1e-3, identical acc.
Offline: a JSONL task file written here, no hub datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.serving.conftest import API_KEY

DATA = Path(__file__).parent / "data" / "tiny_mc.jsonl"
TASK = "llmspeed_tiny_mc"


def write_task(dirpath: Path, jsonl: Path, name: str = TASK) -> Path:
    """A multiple-choice lm-eval task over a local JSONL file ({"question", "choices", "answer"} per line)."""
    (dirpath / f"{name}.yaml").write_text(f"""task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {jsonl}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
""")
    return dirpath


def per_choice(results: dict, task: str = TASK) -> list[list[float]]:
    return [[float(r[0]) for r in s["filtered_resps"]] for s in sorted(results["samples"][task],
                                                                         key=lambda s: s["doc_id"])]


def run_lm_eval(model: str, model_args: dict, task_dir: Path, task: str = TASK, batch_size: int = 4) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    return simple_evaluate(model=model, model_args=model_args, tasks=[task], batch_size=batch_size,
                           task_manager=TaskManager(include_path=str(task_dir)), log_samples=True,
                           random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)


def test_local_completions_matches_hf_backend(make_server, tiny_model_dir, tmp_path, monkeypatch) -> None:
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_dir = tiny_model_dir("llama")
    task_dir = write_task(tmp_path, DATA)
    srv = make_server(api_key=API_KEY)
    served = run_lm_eval("local-completions", {
        "model": "tiny", "base_url": f"{srv.url}/v1/completions", "tokenizer": str(model_dir),
        "header": {"Authorization": f"Bearer {API_KEY}"}, "max_retries": 1, "max_length": 256}, task_dir)
    hf = run_lm_eval("hf", {"pretrained": str(model_dir), "dtype": "float32", "device": "cpu"}, task_dir)
    got, want = per_choice(served), per_choice(hf)
    assert len(got) == len(want) == sum(1 for _ in DATA.open())
    for g, w in zip(got, want, strict=True):
        assert len(g) == len(w) == 4
        assert max(abs(a - b) for a, b in zip(g, w, strict=True)) < 1e-3, (g, w)
    assert served["results"][TASK]["acc,none"] == hf["results"][TASK]["acc,none"]
    assert len({round(x, 3) for row in got for x in row}) > 4  # real, varied scores (not a constant)
