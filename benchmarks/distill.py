"""Decode speed of distilled students against their teacher: same prompt, same engine, one process.

Run: .venv/bin/python benchmarks/distill.py --student out/student [--student out/other] [--teacher default]
Decode tok/s at batch 1 = (n - 1) / (E2E - TTFT) with EOS ignored; the models are timed in alternating rounds
(teacher, students, teacher, ...) and each keeps the median of its rounds, so load from another process
slows all of them rather than one. Prints each student's ratio to the teacher measured in this run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import decode_bytes_per_step, print_table, shakespeare_ids

import llmspeed
from llmspeed.runtime.engine import EngineConfig
from llmspeed.runtime.threads import set_threads


def decode_tok_s(llm, prompt: list[int], new: int) -> float:
    out = llm.generate_tokens([prompt], max_new_tokens=new, ignore_eos=True)[0]
    assert len(out.token_ids) == new, "wrong number of tokens"
    t = out.timings
    return (new - 1) / (t["wall"] - t["ttft"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default="default")
    ap.add_argument("--student", action="append", required=True)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    set_threads(args.threads)
    cfg = EngineConfig(enable_prefix_cache=False)
    models = {"teacher": llmspeed.load(args.teacher, engine_config=cfg)}
    for s in args.student:
        models[s] = llmspeed.load(s, engine_config=cfg)
    prompt = shakespeare_ids(models["teacher"].tokenizer, args.prompt_len)
    speeds: dict[str, list[float]] = {k: [] for k in models}
    for llm in models.values():
        decode_tok_s(llm, prompt, 8)  # warm-up
    for _ in range(args.rounds):
        for name, llm in models.items():
            speeds[name].append(decode_tok_s(llm, prompt, args.new_tokens))
    base = statistics.median(speeds["teacher"])
    rows = []
    for name, llm in models.items():
        med = statistics.median(speeds[name])
        rows.append([name, str(llm.config.n_layers), f"{decode_bytes_per_step(llm.model) / 1e6:.0f}",
                     f"{med:.1f}", f"{max(speeds[name]) - min(speeds[name]):.1f}", f"{med / base:.2f}x"])
    print_table(f"decode b1, prompt {args.prompt_len} + {args.new_tokens} new, median of {args.rounds}",
                ["engine", "layers", "weights MB", "tok/s", "spread", "vs teacher"], rows)


if __name__ == "__main__":
    main()
