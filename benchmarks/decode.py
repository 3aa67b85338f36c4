"""Decode and prefill speed: llmspeed vs HF transformers eager, same weights, same tokens, one process.

Run: .venv/bin/python benchmarks/decode.py [--quick] [--dtypes float32,bfloat16] [--threads N]
Decode tok/s = B * (n - 1) / (E2E - TTFT) (vLLM's TPOT convention); prefill tok/s = prompt tokens / TTFT.
Every run is checked to have produced exactly the requested tokens (EOS ignored). The prefix cache is off:
a repeated prompt would otherwise skip its prefill.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import decode_bytes_per_step, print_table, shakespeare_ids, timed

import llmspeed
from llmspeed.models.default_model import default_gguf_path
from llmspeed.runtime.engine import EngineConfig
from llmspeed.runtime.threads import set_threads
from llmspeed.util.cpu import cpu_info

log = logging.getLogger("bench.decode")


def run_llmspeed(llm, prompt: list[int], batch: int, new: int) -> tuple[float, float]:
    outs = llm.generate_tokens([prompt] * batch, max_new_tokens=new, ignore_eos=True)
    assert all(len(o.token_ids) == new for o in outs), "llmspeed produced the wrong number of tokens"
    t = outs[0].timings
    return t["ttft"], t["wall"]


def run_hf(hf, prompt: list[int], batch: int, new: int) -> tuple[float, float]:
    ids = torch.tensor([prompt] * batch)
    t0 = time.perf_counter()
    with torch.inference_mode():
        hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=1, min_new_tokens=1,
                    pad_token_id=2)
    ttft = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new,
                          min_new_tokens=new, pad_token_id=2)
    e2e = time.perf_counter() - t0
    assert out.shape[1] - ids.shape[1] == new, "HF produced the wrong number of tokens"
    return ttft, e2e


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and tokens (smoke run)")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--model", default="default", help="llmspeed's side: default (int4 as shipped), default:fp32, ...")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    threads = set_threads(args.threads)
    repeats = 1 if args.quick else args.repeats
    new = 16 if args.quick else 128
    import transformers as tf

    g = default_gguf_path()
    t0 = time.perf_counter()
    llmspeed.load(args.model)  # make sure the conversion cache exists, then time a warm load
    t_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    llmspeed.load(args.model)
    t_load = time.perf_counter() - t0
    rows, records = [], []
    bw_note = "GB/s = weight bytes per decode step x steps/s (b1)"
    for dtype in args.dtypes.split(","):
        # no prefix cache: warm-up and repeats reuse the same prompt, which must be recomputed every time
        llm = llmspeed.load(args.model, dtype=dtype, threads=threads,
                            engine_config=EngineConfig(enable_prefix_cache=False, max_batch_tokens=8192))
        hf = tf.AutoModelForCausalLM.from_pretrained(g.parent, gguf_file=g.name, attn_implementation="eager",
                                                     dtype=getattr(torch, dtype)).eval()
        prompt128 = shakespeare_ids(llm.tokenizer, 128)
        prompt512 = shakespeare_ids(llm.tokenizer, 512)
        wbytes = decode_bytes_per_step(llm.model)
        scenarios = [("decode b1", 1, prompt128), ("decode b8", 8, prompt128), ("prefill 512", 1, prompt512)]
        for name, batch, prompt in scenarios:
            n = 1 if name.startswith("prefill") else new
            res = {}
            for engine, fn, model in (("hf-eager", run_hf, hf), ("llmspeed", run_llmspeed, llm)):
                samples: list[tuple[float, float]] = []
                _med, spread, _ = timed(lambda fn=fn, model=model, batch=batch, prompt=prompt, n=n, s=samples:
                                       s.append(fn(model, prompt, batch, n)), repeats)
                ttfts = sorted(s[0] for s in samples)
                e2es = sorted(s[1] for s in samples)
                ttft, e2e = ttfts[len(ttfts) // 2], e2es[len(e2es) // 2]
                if name.startswith("prefill"):
                    tps = len(prompt) * batch / ttft
                else:
                    tps = batch * (n - 1) / max(e2e - ttft, 1e-9)
                res[engine] = tps
                gbs = wbytes * (tps / batch) / 1e9 if not name.startswith("prefill") else float("nan")
                records.append({"scenario": name, "dtype": dtype, "engine": engine, "batch": batch,
                                "tok_s": tps, "ttft_s": ttft, "e2e_s": e2e, "spread_s": spread, "gb_s": gbs,
                                "new_tokens": n, "prompt_tokens": len(prompt), "repeats": repeats})
            for engine in ("hf-eager", "llmspeed"):
                r = next(x for x in records if x["scenario"] == name and x["dtype"] == dtype and x["engine"] == engine)
                rows.append([name, dtype, engine, f"{r['tok_s']:.1f}", f"{res[engine] / res['hf-eager']:.2f}x",
                             "-" if r["gb_s"] != r["gb_s"] else f"{r['gb_s']:.1f}", f"{r['ttft_s'] * 1e3:.0f}"])
        del hf, llm
    cpu = cpu_info()
    env = {"cpu": cpu.model, "cpu_flags": cpu.isa_summary(), "model": args.model, "threads": threads,
           "torch": torch.__version__, "llmspeed": llmspeed.__version__, "repeats": repeats, "new_tokens": new,
           "warm_load_s": t_load, "first_load_s": t_cold}
    print(f"CPU: {cpu.model} ({cpu.isa_summary()})")
    print_table(f"decode/prefill, llmspeed {args.model} vs HF fp32 (same GGUF), threads={threads}, median of {repeats} "
                f"after warm-up; {bw_note}",
                ["scenario", "dtype", "engine", "tok/s", "vs hf", "GB/s", "TTFT ms"], rows)
    print(f"warm load of the default model from the cache: {t_load:.2f} s (first call this run: {t_cold:.2f} s)")
    if args.json:
        args.json.write_text(json.dumps({"env": env, "results": records}, indent=2))


if __name__ == "__main__":
    main()
