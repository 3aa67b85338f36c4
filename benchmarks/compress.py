"""Issue 10's benchmark: every compression recipe beside the float32 original and HF transformers eager fp32.

One process, the default model (or --model). Per row: size, decode b1 / b8 tok/s, prefill tok/s, achieved GB/s
of the decode step, ratios to llmspeed fp32 and to HF eager fp32 (same weights, same process), ΔPPL %, KL,
top-1 agreement and last-word accuracy (llmspeed.evaluate against the fp32 original).

    python benchmarks/compress.py --quick            # int8 + int4-g32, small budgets, no HF (a few minutes)
    python benchmarks/compress.py --out report/compress.json

Note: the embedded SmolLM2 weights were already rounded to 4 bits (GGUF Q4_1), so int4 looks nearly free on them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import decode_bytes_per_step, print_table

FULL = ["int8", "int8-dyn", "int4-g32", "int4-g64", "int4-g32-asym", "int4-g32-gptq", "bf16", "fp16",
        "prune-magnitude-50", "prune-wanda-50", "prune-2:4", "prune-wanda-2:4", "prune-mlp-25", "svd-e0.95",
        "prune-wanda-2:4,int8"]
QUICK = ["int8", "int4-g32"]


def _speed(llm: Any, args: argparse.Namespace) -> dict[str, float]:
    from llmspeed.bench.quick import SpeedConfig, measure_speed, prompt_of

    s = measure_speed(llm, SpeedConfig(prompt_len=128, new_tokens=args.new_tokens, prefill_len=512,
                                       repeats=args.repeats))
    prompts = [f"{i}. " + prompt_of(llm, 124) for i in range(8)]  # distinct: no prefix-cache hits
    walls = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        outs = llm.generate(prompts, max_new_tokens=args.new_tokens, ignore_eos=True)
        walls.append(sum(len(o.token_ids) for o in outs) / (time.perf_counter() - t0))
    gbs = decode_bytes_per_step(llm.model) * s.decode_tok_s / 1e9
    return {"decode_b1": s.decode_tok_s, "decode_b8": sorted(walls)[len(walls) // 2], "prefill512": s.prefill_tok_s,
            "gb_s": gbs}


def _hf_decode(model: str, new_tokens: int, repeats: int) -> float | None:
    try:
        from llmspeed.bench.baselines.hf import HFBackend
        from llmspeed.bench.config import Scenario
        from llmspeed.bench.quick import FILLER
    except ImportError as e:
        logging.warning("HF baseline unavailable: %s", e)
        return None
    hf = HFBackend(model)
    hf.load()
    ids = hf.encode(FILLER * 8)[:128]
    sc = Scenario("decode_b1", 128, 1, new_tokens)
    hf.run(sc, 4, ids)  # warm-up
    rates = []
    for _ in range(repeats):
        r = hf.run(sc, new_tokens, ids)
        rates.append((r.tokens_per_seq[0] - 1) / (r.e2e_s - r.ttft_s))
    del hf
    return sorted(rates)[len(rates) // 2]


def _quality(llm: Any, base: Any, quick: bool) -> dict[str, Any]:
    import llmspeed

    kw = dict(max_tokens=1024, ood_max_tokens=0, lastword_n=20) if quick else {}
    q = llmspeed.evaluate(llm, baseline=base, **kw)
    return {k: q.get(k) for k in ("ppl", "baseline_ppl", "delta_ppl_pct", "kl_mean", "kl_p99", "top1_agreement",
                                  "lastword_accuracy", "n_tokens")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--recipes", help="comma-separated list of recipes, ';' between recipes")
    ap.add_argument("--quick", action="store_true", help="int8 + int4-g32, 1 repeat, 16 new tokens, 1,024 eval "
                    "tokens, no HF")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.quick:
        args.repeats, args.new_tokens, args.no_hf = 1, 16, True
    recipes = args.recipes.split(";") if args.recipes else (QUICK if args.quick else FULL)

    import llmspeed
    from llmspeed.bench.quick import model_size_mb, slow_cause
    from llmspeed.compress.api import Recipe

    orig = llmspeed.load(args.model, threads=args.threads)
    rows: list[dict[str, Any]] = [{"recipe": "fp32 (original)", "size_mb": model_size_mb(orig.model), **_speed(orig, args)}]
    hf = None if args.no_hf else _hf_decode(args.model, args.new_tokens, args.repeats)
    for rec in recipes:
        try:
            Recipe.parse(rec)
        except ValueError as e:
            rows.append({"recipe": rec, "error": str(e).splitlines()[0]})
            continue
        llm = llmspeed.load(args.model, threads=args.threads)
        t0 = time.perf_counter()
        try:
            reports = llmspeed.compress_(llm, rec, progress=False)
        except (ValueError, RuntimeError) as e:
            rows.append({"recipe": rec, "error": str(e).splitlines()[0]})
            continue
        row = {"recipe": rec, "compress_s": time.perf_counter() - t0, "size_mb": model_size_mb(llm.model),
               "changed": sum(len(r.changed) for r in reports), **_speed(llm, args)}
        row |= _quality(llm, orig, args.quick)
        if row["decode_b1"] < rows[0]["decode_b1"]:
            row["note"] = "slower than fp32: " + slow_cause(rec.split(","))
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
        del llm
    base = rows[0]["decode_b1"]

    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    table = []
    for r in rows:
        if "error" in r:
            table.append([r["recipe"], "error: " + r["error"][:60]] + ["-"] * 10)
            continue
        table.append([r["recipe"], f(r["size_mb"], ".0f"), f(r["decode_b1"], ".1f"), f(r["decode_b8"], ".1f"),
                      f(r["prefill512"], ".0f"), f(r["gb_s"], ".2f"), f(r["decode_b1"] / base, ".2f"),
                      f(r["decode_b1"] / hf if hf else None, ".2f"), f(r.get("delta_ppl_pct"), "+.2f"),
                      f(r.get("kl_mean"), ".4f"), f(r.get("top1_agreement"), ".3f"),
                      f(r.get("lastword_accuracy"), ".3f")])
    print_table(f"compression on {args.model} ({torch.get_num_threads()} threads; HF eager fp32 decode b1: "
                f"{f(hf, '.1f')} tok/s)",
                ["recipe", "MB", "b1 tok/s", "b8 tok/s", "prefill512", "GB/s", "x fp32", "x HF", "ΔPPL %", "KL",
                 "top-1", "last-word"], table)
    for r in rows:
        if r.get("note"):
            print(f"{r['recipe']}: {r['note']}")
    print(f"decode b1: prompt 128 + {args.new_tokens} new tokens, EOS ignored, median of {args.repeats} after "
          "warm-up; b8: 8 distinct prompts, total tokens / wall; GB/s: weight bytes per step x tok/s. "
          "The embedded weights were already 4-bit (Q4_1): int4 looks nearly free on them.")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"hf_decode_b1": hf, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
