"""Speed runs of one candidate for the auto search: the objective's figure, measured the same way for every
candidate (and the original) — warm-up first, medians of repeats, EOS ignored so runs compare.

Without `--prompts`: decode/prefill/size use bench.quick.measure_speed (filler prompt, batch 1); throughput/ttft
send `concurrency` (16) filler requests at once, with the server's KV size. With `--prompts FILE.jsonl` (one
`{"prompt": ..., "max_tokens": N}` per line) the user's own prompts replace the filler in every run (throughput/ttft:
waves of `concurrency` requests over them).
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmspeed.bench.quick import SpeedConfig, measure_speed, model_size_mb, prompt_of, warm_decode_buckets
from llmspeed.profiling.stages import STAGES
from llmspeed.serving.config import SERVE_KV_CACHE_TOKENS
from llmspeed.util.jsonl import read_objects


@dataclass(frozen=True)
class WorkPrompt:
    prompt: str
    max_tokens: int


def load_prompts(path: str | Path, default_max_tokens: int = 64) -> list[WorkPrompt]:
    """JSONL: one object per line with a non-empty "prompt" string and an optional positive "max_tokens"."""
    p = Path(path)
    out = []
    for at, obj in read_objects(p, "--prompts"):
        if not isinstance(obj.get("prompt"), str) or not obj["prompt"]:
            raise ValueError(f"{at}: each line needs a non-empty \"prompt\" string")
        n = obj.get("max_tokens", default_max_tokens)
        if not isinstance(n, int) or isinstance(n, bool) or n < 2:
            raise ValueError(f"{at}: max_tokens must be an integer >= 2, got {n!r}")
        out.append(WorkPrompt(obj["prompt"], n))
    if not out:
        raise ValueError(f"{p}: no prompts")
    return out


class threads_set:
    """Context manager: torch threads = n for the block (serving setting), restored after."""

    def __init__(self, n: int | None) -> None:
        self.n, self.old = n, torch.get_num_threads()

    def __enter__(self) -> None:
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.old)


def fit_new_tokens(llm: Any, text: str, max_tokens: int) -> int:
    """New tokens that fit the context window after this prompt."""
    room = llm.config.max_position - len(llm.tokenizer.encode(text)) - 2
    if room < 2:
        raise ValueError("a workload prompt does not fit the model's context window")
    return min(max_tokens, room)


def _span(llm: Any, wp: WorkPrompt) -> tuple[int, int]:
    """(prompt tokens, new tokens) of one workload request."""
    return len(llm.tokenizer.encode(wp.prompt)), fit_new_tokens(llm, wp.prompt, wp.max_tokens)


@torch.inference_mode()
def single_stream(llm: Any, prompts: list[WorkPrompt], repeats: int) -> dict[str, float]:
    """The user's prompts one at a time (batch 1): decode and prefill tok/s over all of them, median of repeats."""
    llm.reset_engine(enable_prefix_cache=False)
    llm.generate(prompts[0].prompt, max_new_tokens=4, ignore_eos=True)  # warm-up
    warm_decode_buckets(llm, [_span(llm, wp) for wp in prompts])  # no compile inside the timed runs
    dec, pre = [], []
    for _ in range(repeats):
        n_dec = t_dec = n_pre = t_pre = 0.0
        for wp in prompts:
            o = llm.generate(wp.prompt, max_new_tokens=fit_new_tokens(llm, wp.prompt, wp.max_tokens), ignore_eos=True)[0]
            n_dec += len(o.token_ids) - 1
            t_dec += o.timings["t_decode"]
            n_pre += len(o.prompt_token_ids)
            t_pre += o.timings["t_prefill"]
        dec.append(n_dec / t_dec if t_dec > 0 else 0.0)
        pre.append(n_pre / t_pre if t_pre > 0 else 0.0)
    return {"decode_tok_s": statistics.median(dec), "prefill_tok_s": statistics.median(pre)}


def waves(prompts: list[WorkPrompt], concurrency: int) -> list[list[WorkPrompt]]:
    """The workload as waves of exactly `concurrency` requests each (the last one filled up by cycling from the
    start): every wave has the same number of requests in flight, however many prompts the file holds."""
    n = -(-len(prompts) // concurrency) * concurrency
    flat = [prompts[i % len(prompts)] for i in range(n)]
    return [flat[i: i + concurrency] for i in range(0, n, concurrency)]


@torch.inference_mode()
def concurrent(llm: Any, prompts: list[WorkPrompt], repeats: int, serving: dict[str, int],
               concurrency: int = 16) -> dict[str, float]:
    """`concurrency` requests at once (continuous batching, the engine the server runs, its KV size) under the
    serving settings, wave after wave over the prompts: completion tok/s over all waves and median TTFT, median of
    repeats."""
    eng = {k: serving[k] for k in ("max_batch", "max_batch_tokens") if k in serving}
    llm.reset_engine(enable_prefix_cache=False, kv_cache_tokens=SERVE_KV_CACHE_TOKENS, **eng)  # the server's KV
    spans = [[_span(llm, wp) for wp in w] for w in waves(prompts, concurrency)]  # (prompt, new) tokens per request
    work = [([wp.prompt for wp in w], min(n for _, n in sp))
            for w, sp in zip(waves(prompts, concurrency), spans, strict=True)]
    with threads_set(serving.get("threads")):
        # warm-up with a whole wave: a compiled candidate builds its batch-`concurrency` decode graph here, not
        # inside the timed run (a screening run has one repeat, so a cold compile there misranked compile)
        llm.generate(work[0][0], max_new_tokens=4, ignore_eos=True)
        # ... and the graphs of every KV-length bucket the waves reach (a wave's batch is padded to its longest row)
        rows = min(concurrency, serving.get("max_batch", concurrency))
        warm_decode_buckets(llm, [(max(p for p, _ in sp), n_new) for sp, (_, n_new) in zip(spans, work, strict=True)],
                            rows)
        tps, ttft = [], []
        for _ in range(repeats):
            n_tok, wall, firsts = 0, 0.0, []
            for texts, n_new in work:
                outs = llm.generate(texts, max_new_tokens=n_new, ignore_eos=True)
                wall += max(o.timings["wall"] for o in outs)
                n_tok += sum(len(o.token_ids) for o in outs)
                firsts += [o.timings["ttft"] for o in outs]
            tps.append(n_tok / wall)
            ttft.append(1e3 * statistics.median(firsts))
    return {"throughput_tok_s": statistics.median(tps), "ttft_ms": statistics.median(ttft),
            "concurrency": float(concurrency), "requests": float(sum(len(t) for t, _ in work))}


def speed_of(llm: Any, objective: str, prompts: list[WorkPrompt] | None, *, new_tokens: int, repeats: int,
             concurrency: int, serving: dict[str, int], prefill_len: int = 512) -> dict[str, Any]:
    """The figures the objective needs (plus size_mb, always), for one candidate."""
    out: dict[str, Any] = {"size_mb": model_size_mb(llm.model)}
    if objective == "size":
        return out
    saved = dataclasses.asdict(llm.engine_config)  # the runs change KV size, batch limits, prefix cache
    try:
        if objective in ("throughput", "ttft"):
            work = prompts or [WorkPrompt(prompt_of(llm, 128), new_tokens)]
            out |= concurrent(llm, work, repeats, serving, concurrency)
        elif prompts:
            out |= single_stream(llm, prompts, repeats)
        else:
            s = measure_speed(llm, SpeedConfig(new_tokens=new_tokens, repeats=repeats, prefill_len=prefill_len))
            out |= {"decode_tok_s": s.decode_tok_s, "prefill_tok_s": s.prefill_tok_s, "settings": s.settings}
    finally:
        llm.reset_engine(**saved)
    return out


@torch.inference_mode()
def cycle_time(llm: Any, prompt: str, new_tokens: int, repeats: int) -> dict[str, float]:
    """One request's T = t_pre + t_prefill + t_decode + t_post (stage medians after a warm-up), in seconds."""
    cached = llm.engine_config.enable_prefix_cache
    llm.reset_engine(enable_prefix_cache=False)
    try:
        llm.generate(prompt, max_new_tokens=4, ignore_eos=True)
        runs = [llm.generate(prompt, max_new_tokens=new_tokens, ignore_eos=True)[0].timings for _ in range(repeats)]
    finally:
        llm.reset_engine(enable_prefix_cache=cached)
    out = {k: statistics.median(r[k] for r in runs) for k in STAGES}
    out["T"] = sum(out[k] for k in STAGES)
    return out
