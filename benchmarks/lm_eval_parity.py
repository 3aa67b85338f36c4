"""lm-eval through the server vs lm-eval's own `hf` backend on the same weights (a local multiple-choice task).

    python benchmarks/lm_eval_parity.py [--model default] [--task-file benchmarks/data/mini_facts.jsonl]

Exports `--model` as a float32 Hugging Face directory (export/hf.py), serves that directory with llmspeed on
127.0.0.1, runs lm-eval's `local-completions` (its defaults: token-id prompts, batched) and `hf` on the same task,
and prints acc for both and the largest per-choice loglikelihood difference. Offline: the task is a JSONL file
with {"question", "choices", "answer"} per line.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent


def write_task(dirpath: Path, jsonl: Path, name: str) -> None:
    (dirpath / f"{name}.yaml").write_text(f"""task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {jsonl.resolve()}
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--task-file", type=Path, default=HERE / "data" / "mini_facts.jsonl")
    ap.add_argument("--batch-size", type=int, default=4)
    args = ap.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    import llmspeed
    from llmspeed.export.api import export
    from llmspeed.serving.app import create_app
    from llmspeed.serving.config import ServerConfig
    from llmspeed.serving.server import ThreadedServer

    name = "llmspeed_parity"
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = export(args.model, "hf", Path(tmp) / "hf")
        write_task(Path(tmp), args.task_file, name)
        tm = TaskManager(include_path=tmp)

        def run(model: str, model_args: dict) -> tuple[dict, float]:
            t0 = time.perf_counter()
            r = simple_evaluate(model=model, model_args=model_args, tasks=[name], batch_size=args.batch_size,
                                task_manager=tm, log_samples=True)
            return r, time.perf_counter() - t0

        llm = llmspeed.load(str(hf_dir))
        with ThreadedServer(create_app(llm, ServerConfig(model_name="m", cache_l1=0))) as srv:
            served, t_served = run("local-completions", {"model": "m", "base_url": f"{srv.url}/v1/completions",
                                                         "tokenizer": str(hf_dir), "max_length": 2048})
        hf, t_hf = run("hf", {"pretrained": str(hf_dir), "dtype": "float32", "device": "cpu"})

    def rows(r: dict) -> list[list[float]]:
        return [[float(x[0]) for x in s["filtered_resps"]] for s in sorted(r["samples"][name], key=lambda s: s["doc_id"])]

    diff = max(abs(a - b) for g, w in zip(rows(served), rows(hf), strict=True) for a, b in zip(g, w, strict=True))
    n = len(rows(hf))
    print(f"model {args.model}, task {args.task_file.name} ({n} docs)")
    print(f"  local-completions via llmspeed serve: acc {served['results'][name]['acc,none']:.4f} ({t_served:.1f} s)")
    print(f"  lm-eval hf backend:                   acc {hf['results'][name]['acc,none']:.4f} ({t_hf:.1f} s)")
    print(f"  max per-choice |loglikelihood difference|: {diff:.2e}")


if __name__ == "__main__":
    main()
