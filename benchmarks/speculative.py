"""Speculative decoding (`--draft ngram`) vs plain decoding, and HF transformers' own prompt lookup vs HF plain,
on the same prompts and weights, in one process.

Run: .venv/bin/python benchmarks/speculative.py [--grounded 24] [--open 4] [--max-new-tokens 128] [--k 8]
llmspeed runs the default model (int4 blocks as shipped); HF runs the same GGUF's float32 weights as
LlamaForCausalLM (eager). Greedy, stop at EOS or --max-new-tokens. For each prompt the two llmspeed modes run
back to back (then the two HF modes), so machine load drifts hit both sides alike; their greedy token ids must be
identical. Decode tok/s = generated tokens after the first / decode time (llmspeed); HF has no decode/prefill
split in assisted generation, so both engines also get end-to-end tok/s = generated tokens / request time.
On a shared machine wall time mostly measures the neighbours: the process CPU time of each request (1 thread)
is reported beside it, and the CPU-time ratio is the figure to trust there.
Also: the time of one verify pass of k+1 tokens vs one decode step (the ratio that decides speculation here).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import print_table
from _spec_prompts import grounded_prompts, open_prompts

import llmspeed
from llmspeed.runtime.engine import EngineConfig
from llmspeed.runtime.scheduler import Batch
from llmspeed.runtime.sequence import SamplingParams
from llmspeed.runtime.threads import set_threads
from llmspeed.util.cpu import cpu_info

log = logging.getLogger("bench.speculative")


def run_llmspeed(llm, ids: list[int], new: int) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    o = llm.generate_tokens([ids], max_new_tokens=new)[0]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    t = o.timings
    return {"ids": o.token_ids, "n": len(o.token_ids), "t_decode": t["t_decode"], "wall": wall, "cpu": cpu,
            "drafted": t.get("spec_draft_tokens", 0.0), "accepted": t.get("spec_accepted_tokens", 0.0),
            "verifies": t.get("spec_verifies", 0.0)}


def run_hf(hf, ids: list[int], new: int, lookup: int) -> dict:
    x = torch.tensor([ids])
    kw = {"prompt_lookup_num_tokens": lookup} if lookup else {}
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        out = hf.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=new,
                          pad_token_id=2, temperature=None, top_p=None, top_k=None, **kw)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    gen = out[0, x.shape[1]:].tolist()
    eos = hf.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    if gen and gen[-1] in eos:
        gen = gen[:-1]
    return {"ids": gen, "n": len(out[0]) - x.shape[1], "wall": wall, "cpu": cpu}


def verify_cost(llm, ks: list[int], ctx: int, repeats: int) -> dict[int, float]:
    """Median time of a forward over T = k+1 new tokens (cached context `ctx`) / one decode step, interleaved."""
    eng = llm.engine
    ids = [int(x) for x in torch.randint(100, 20000, (ctx + max(ks) + 1,), generator=torch.Generator().manual_seed(0))]
    seq = eng.make_sequence(ids, SamplingParams(max_new_tokens=2))
    eng.add(seq)
    eng.step()  # prefill of the whole context
    times: dict[int, list[float]] = {1: [], **{k + 1: [] for k in ks}}
    with torch.inference_mode():
        for _ in range(repeats):
            for T in times:
                seq.num_computed = seq.num_tokens - T  # the last T tokens are "new": their K/V is rewritten
                b = Batch([seq], is_prefill=False)
                t0 = time.process_time()  # CPU time: on a shared machine wall time mostly measures the neighbours
                if T == 1:
                    eng.runner.forward(b)
                else:
                    eng.runner.forward_all(b)
                times[T].append(time.process_time() - t0)
    eng.abort(seq.seq_id)
    eng.step()
    base = statistics.median(times[1])
    return {T - 1: statistics.median(v) / base for T, v in times.items() if T > 1} | {0: base}


def summarize(rows: list[dict], kind: str) -> dict:
    sel = [r for r in rows if (r["kind"] == "open") == (kind == "open")]
    if not sel:
        return {}
    def tps(mode: str, field: str) -> float:
        n = sum(r[mode]["n"] - (field == "t_decode") for r in sel)
        return n / max(sum(r[mode][field] for r in sel), 1e-9)
    out = {"prompts": len(sel), "tokens": sum(r["plain"]["n"] for r in sel),
           "identical": sum(r["plain"]["ids"] == r["spec"]["ids"] for r in sel),
           "plain_decode_tok_s": tps("plain", "t_decode"), "spec_decode_tok_s": tps("spec", "t_decode"),
           "plain_e2e_tok_s": tps("plain", "wall"), "spec_e2e_tok_s": tps("spec", "wall")}
    out["decode_speedup"] = out["spec_decode_tok_s"] / out["plain_decode_tok_s"]
    out["e2e_speedup"] = out["spec_e2e_tok_s"] / out["plain_e2e_tok_s"]
    out["plain_cpu_tok_s"], out["spec_cpu_tok_s"] = tps("plain", "cpu"), tps("spec", "cpu")
    out["cpu_speedup"] = out["spec_cpu_tok_s"] / out["plain_cpu_tok_s"]
    d = sum(r["spec"]["drafted"] for r in sel)
    a = sum(r["spec"]["accepted"] for r in sel)
    v = sum(r["spec"]["verifies"] for r in sel)
    out["acceptance_rate"] = a / d if d else 0.0
    out["mean_accepted_len"] = (a + v) / v if v else 0.0
    out["per_prompt_decode_speedup_median"] = statistics.median(
        (r["spec"]["n"] - 1) / r["spec"]["t_decode"] / ((r["plain"]["n"] - 1) / r["plain"]["t_decode"])
        for r in sel if r["plain"]["n"] > 1 and r["spec"]["n"] > 1)
    if "hf_plain" in sel[0]:
        out["hf_plain_e2e_tok_s"] = tps("hf_plain", "wall")
        out["hf_lookup_e2e_tok_s"] = tps("hf_lookup", "wall")
        out["hf_speedup"] = out["hf_lookup_e2e_tok_s"] / out["hf_plain_e2e_tok_s"]
        out["hf_plain_cpu_tok_s"], out["hf_lookup_cpu_tok_s"] = tps("hf_plain", "cpu"), tps("hf_lookup", "cpu")
        out["hf_cpu_speedup"] = out["hf_lookup_cpu_tok_s"] / out["hf_plain_cpu_tok_s"]
        out["hf_identical"] = sum(r["hf_plain"]["ids"] == r["hf_lookup"]["ids"] for r in sel)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--grounded", type=int, default=24, help="input-grounded prompts (<= 25)")
    ap.add_argument("--open", type=int, default=4, help="open-ended prompts (<= 6)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--k", type=int, default=8, help="llmspeed --draft ngram:K")
    ap.add_argument("--hf-lookup", type=int, default=10, help="HF prompt_lookup_num_tokens")
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--verify-repeats", type=int, default=7)
    ap.add_argument("--pairs", type=int, default=2, help="1: plain, ngram once each; 2: ABBA, the faster of each")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--model", default="default")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    threads = set_threads(args.threads)
    ecfg = EngineConfig(enable_prefix_cache=False, kv_cache_tokens=2048)
    llm = llmspeed.load(args.model, engine_config=ecfg)
    # the same weights behind a second LLM with the draft: both engines (and KV caches) live through the run
    llm_spec = llmspeed.LLM(llm.model, llm.tokenizer, llm.recipe, llm.source, ecfg, draft=f"ngram:{args.k}")
    log.info("loaded %s", args.model)
    ks = sorted({1, 2, 4, args.k, 10})
    cost = verify_cost(llm, ks, 384, args.verify_repeats)
    log.info("decode step %.1f ms; verify of k+1 tokens / decode step: %s", cost[0] * 1e3,
             ", ".join(f"k={k}: {cost[k]:.2f}x" for k in ks))
    hf = None
    if not args.no_hf:
        import transformers as tf

        from llmspeed.models.default_model import default_gguf_path

        g = default_gguf_path()
        hf = tf.AutoModelForCausalLM.from_pretrained(g.parent, gguf_file=g.name, attn_implementation="eager",
                                                     dtype=torch.float32).eval()
    grounded, opened = grounded_prompts(args.grounded), open_prompts(args.open)
    prompts = []  # open-ended prompts spread through the run (a run cut short still has some of each)
    every = max(len(grounded) // max(len(opened), 1), 1)
    for i, g in enumerate(grounded):
        if i % every == 1 and opened:
            prompts.append(opened.pop(0))
        prompts.append(g)
    prompts += opened
    tpl = llm.tokenizer.apply_chat_template
    for m in (llm, llm_spec):
        run_llmspeed(m, llm.tokenizer.encode(tpl([{"role": "user", "content": "Hi"}])), 8)  # warm-up
    rows = []
    t_start = time.perf_counter()
    for i, (kind, prompt) in enumerate(prompts):
        ids = llm.tokenizer.encode(tpl([{"role": "user", "content": prompt}]))
        runs = {"plain": [], "spec": []}
        for mode in ("plain", "spec", "spec", "plain")[: 4 if args.pairs > 1 else 2]:  # ABBA: drift hits both
            runs[mode].append(run_llmspeed(llm if mode == "plain" else llm_spec, ids, args.max_new_tokens))
        plain, spec = (min(runs[m], key=lambda r: r["cpu"]) for m in ("plain", "spec"))  # least disturbed run
        row = {"kind": kind, "prompt_tokens": len(ids), "plain": plain, "spec": spec}
        if hf is not None:
            row["hf_plain"] = run_hf(hf, ids, args.max_new_tokens, 0)
            row["hf_lookup"] = run_hf(hf, ids, args.max_new_tokens, args.hf_lookup)
        rows.append(row)
        if args.json:  # after every prompt: a run cut short still leaves its figures
            args.json.write_text(json.dumps({"verify_cost": cost, "summary": {
                "grounded": summarize(rows, "grounded"), "open": summarize(rows, "open")}, "rows": rows}, indent=1))
        log.info("[%d/%d %.0f s] %s: %d tokens, identical %s, llmspeed %.2fx decode wall, %.2fx CPU (acc %d/%d)%s",
                 i + 1, len(prompts), time.perf_counter() - t_start, kind, plain["n"], plain["ids"] == spec["ids"],
                 ((spec["n"] - 1) / spec["t_decode"]) / max((plain["n"] - 1) / plain["t_decode"], 1e-9),
                 plain["cpu"] / spec["cpu"], spec["accepted"], spec["drafted"],
                 "" if hf is None else f", HF lookup {row['hf_plain']['wall'] / row['hf_lookup']['wall']:.2f}x wall, "
                 f"{row['hf_plain']['cpu'] / row['hf_lookup']['cpu']:.2f}x CPU")
    res = {"grounded": summarize(rows, "grounded"), "open": summarize(rows, "open")}
    cpu = cpu_info()
    print(f"CPU: {cpu.model} ({cpu.isa_summary()}), threads {threads}, model {args.model}, "
          f"--draft ngram:{args.k}, HF prompt_lookup_num_tokens={args.hf_lookup}, max {args.max_new_tokens} new")
    print_table("verify pass of k+1 tokens / one decode step (b1, context 384)", ["k", "ratio"],
                [["decode step", f"{cost[0] * 1e3:.1f} ms"]] + [[str(k), f"{cost[k]:.2f}x"] for k in ks])
    kinds = [name for name, s in res.items() if s]  # one column per prompt kind: fits 80 columns
    metrics = [("prompts", "prompts", "{}"), ("plain decode tok/s", "plain_decode_tok_s", "{:.1f}"),
               ("ngram decode tok/s", "spec_decode_tok_s", "{:.1f}"),
               ("decode speed-up (pooled)", "decode_speedup", "{:.2f}x"),
               ("decode speed-up (per-prompt median)", "per_prompt_decode_speedup_median", "{:.2f}x"),
               ("end-to-end speed-up", "e2e_speedup", "{:.2f}x"), ("CPU-time speed-up", "cpu_speedup", "{:.2f}x"),
               ("acceptance", "acceptance_rate", "{:.0%}"), ("mean accepted length", "mean_accepted_len", "{:.2f}"),
               ("HF plain e2e tok/s", "hf_plain_e2e_tok_s", "{:.1f}"),
               ("HF lookup e2e tok/s", "hf_lookup_e2e_tok_s", "{:.1f}"),
               ("HF lookup speed-up", "hf_speedup", "{:.2f}x"), ("HF CPU-time speed-up", "hf_cpu_speedup", "{:.2f}x")]
    rows_t = [[label, *(fmt.format(res[k].get(key, 0)) for k in kinds)] for label, key, fmt in metrics]
    rows_t.insert(1, ["greedy text identical", *(f"{res[k]['identical']}/{res[k]['prompts']}" for k in kinds)])
    rows_t.append(["HF text identical", *(str(res[k].get("hf_identical", "-")) for k in kinds)])
    print_table("llmspeed --draft ngram vs plain; HF prompt lookup vs HF plain (same prompts, same run)",
                ["figure", *kinds], rows_t)
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu.model, "threads": threads, "verify_cost": cost, "summary": res,
                                         "rows": [{k: v for k, v in r.items()} for r in rows]}, indent=1))


if __name__ == "__main__":
    main()
