"""A draft model (e.g. a distilled student) for speculative decoding vs plain decoding, on held-out Shakespeare.

Run: .venv/bin/python benchmarks/draft_model.py --draft out/student-int4 [--k 2,3,4] [--model default]
Prompts: `--prompts` windows of `--prompt-len` tokens from the held-out plays (never the calibration ones), each
continued greedily for `--max-new-tokens` tokens with EOS ignored. Per prompt and k the plain and drafted runs go
in ABBA order (load drift hits both) and the faster of each is kept; the drafted text must equal the plain one.
Also: the cost of a verify pass of k+1 tokens against one decode step of the target (the ratio that decides
whether a draft can pay on a 135M model), and one step of the draft itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import print_table
from speculative import verify_cost

import llmspeed
from llmspeed.data.texts import eval_plays
from llmspeed.runtime.engine import EngineConfig
from llmspeed.runtime.threads import set_threads
from llmspeed.util.cpu import cpu_info

log = logging.getLogger("bench.draft_model")


def heldout_prompts(tokenizer, n: int, length: int) -> list[list[int]]:
    """`n` windows of `length` tokens spread evenly over the held-out plays."""
    ids = tokenizer.encode(eval_plays().text)
    step = max((len(ids) - length) // max(n, 1), 1)
    return [ids[i * step: i * step + length] for i in range(n)]


def run(llm, ids: list[int], new: int) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    o = llm.generate_tokens([ids], max_new_tokens=new, ignore_eos=True)[0]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    t = o.timings
    if len(o.token_ids) != new:
        raise RuntimeError(f"asked for {new} tokens, got {len(o.token_ids)}")
    return {"ids": o.token_ids, "n": new, "t_decode": t["t_decode"], "wall": wall, "cpu": cpu,
            "drafted": t.get("spec_draft_tokens", 0.0), "accepted": t.get("spec_accepted_tokens", 0.0),
            "verifies": t.get("spec_verifies", 0.0)}


def summarize(rows: list[dict]) -> dict:
    n = sum(r["plain"]["n"] - 1 for r in rows)
    plain = n / sum(r["plain"]["t_decode"] for r in rows)
    spec = n / sum(r["spec"]["t_decode"] for r in rows)
    d, a, v = (sum(r["spec"][f] for r in rows) for f in ("drafted", "accepted", "verifies"))
    return {"prompts": len(rows), "identical": sum(r["plain"]["ids"] == r["spec"]["ids"] for r in rows),
            "plain_decode_tok_s": plain, "spec_decode_tok_s": spec, "decode_speedup": spec / plain,
            "cpu_speedup": sum(r["plain"]["cpu"] for r in rows) / sum(r["spec"]["cpu"] for r in rows),
            "per_prompt_median": statistics.median(r["plain"]["t_decode"] / r["spec"]["t_decode"] for r in rows),
            "acceptance_rate": a / d if d else 0.0, "mean_accepted_len": (a + v) / v if v else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--draft", required=True, help="draft model directory (shares the tokenizer)")
    ap.add_argument("--k", default="2,3,4", help="comma-separated proposal counts")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--verify-repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    threads = set_threads(args.threads)
    ks = [int(k) for k in args.k.split(",")]
    ecfg = EngineConfig(enable_prefix_cache=False, kv_cache_tokens=4096)
    llm = llmspeed.load(args.model, engine_config=ecfg)
    specs = {k: llmspeed.LLM(llm.model, llm.tokenizer, llm.recipe, llm.source, ecfg, draft=f"{args.draft}:{k}")
             for k in ks}
    draft_llm = llmspeed.load(args.draft, engine_config=ecfg)  # the draft alone: its own decode step
    cost = verify_cost(llm, sorted({1, *ks}), args.prompt_len, args.verify_repeats)
    dcost = verify_cost(draft_llm, [1], args.prompt_len, args.verify_repeats)
    log.info("target decode step %.2f ms CPU, draft decode step %.2f ms CPU (%.2f of the target's)",
             cost[0] * 1e3, dcost[0] * 1e3, dcost[0] / cost[0])
    prompts = heldout_prompts(llm.tokenizer, args.prompts, args.prompt_len)
    for m in (llm, *specs.values()):
        run(m, prompts[0][:32], 8)  # warm-up
    rows: dict[int, list[dict]] = {k: [] for k in ks}
    for i, ids in enumerate(prompts):
        for k, spec_llm in specs.items():
            runs: dict[str, list[dict]] = {"plain": [], "spec": []}
            for mode in ("plain", "spec", "spec", "plain"):
                runs[mode].append(run(llm if mode == "plain" else spec_llm, ids, args.max_new_tokens))
            plain, spec = (min(runs[m], key=lambda r: r["t_decode"]) for m in ("plain", "spec"))
            rows[k].append({"plain": plain, "spec": spec})
            log.info("[%d/%d] k=%d identical %s, decode %.2fx, accepted %d/%d", i + 1, len(prompts), k,
                     plain["ids"] == spec["ids"], plain["t_decode"] / spec["t_decode"], spec["accepted"],
                     spec["drafted"])
    res = {k: summarize(r) for k, r in rows.items()}
    cpu = cpu_info()
    print(f"CPU: {cpu.model} ({cpu.isa_summary()}), threads {threads}, target {args.model}, draft {args.draft}, "
          f"{args.prompts} held-out windows of {args.prompt_len} tokens + {args.max_new_tokens} new, greedy")
    print_table("one step (b1, CPU time, median)", ["pass", "ms", "vs decode step"],
                [["target decode step", f"{cost[0] * 1e3:.2f}", "1.00x"],
                 ["draft decode step", f"{dcost[0] * 1e3:.2f}", f"{dcost[0] / cost[0]:.2f}x"]]
                + [[f"target verify k={k}", f"{cost[k] * cost[0] * 1e3:.2f}", f"{cost[k]:.2f}x"] for k in sorted(ks)])
    print_table("draft model vs plain decoding (same prompts, same run)",
                ["k", "identical", "plain tok/s", "draft tok/s", "speed-up", "median", "accept", "mean len"],
                [[str(k), f"{s['identical']}/{s['prompts']}", f"{s['plain_decode_tok_s']:.1f}",
                  f"{s['spec_decode_tok_s']:.1f}", f"{s['decode_speedup']:.2f}x", f"{s['per_prompt_median']:.2f}x",
                  f"{100 * s['acceptance_rate']:.0f}%", f"{s['mean_accepted_len']:.2f}"] for k, s in res.items()])
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu.model, "verify_cost": cost, "draft_step": dcost[0],
                                         "summary": res}, indent=1))


if __name__ == "__main__":
    main()
