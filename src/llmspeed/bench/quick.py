"""Quick size and speed of a (compressed) model, measured the same way for the original and the optimized one
(`llmspeed optimize`'s before/after table; `llmspeed bench` is the full, baseline-aware measurement)."""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from llmspeed.llm import LLM

log = logging.getLogger(__name__)

FILLER = ("It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
          "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, "
          "it was the season of Darkness, it was the spring of hope, it was the winter of despair. ")


def model_size_mb(model: nn.Module) -> float:
    """Bytes of all parameters and buffers (shared storage counted once), in MB (1e6)."""
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            continue
        seen.add(ptr)
        total += t.untyped_storage().nbytes()
    return total / 1e6


def prompt_of(llm: LLM, n_tokens: int) -> str:
    """A text of about `n_tokens` tokens (cut at a token boundary, then decoded)."""
    ids = llm.tokenizer.encode(FILLER * (n_tokens // 40 + 2))[:n_tokens]
    return llm.tokenizer.decode(ids)


def decode_buckets(llm: LLM, spans: list[tuple[int, int]]) -> list[int]:
    """KV-length buckets a compiled decode step visits for requests of (prompt tokens, new tokens); [] when the
    decode step is not compiled."""
    comp = llm.options.compile
    if comp is None:
        return []
    b = comp.bucket
    out: set[int] = set()
    for p, n in spans:  # decode steps see KV lengths p + 1 .. p + n
        out.update(range(-(-(p + 1) // b) * b, -(-(p + n) // b) * b + 1, b))
    return sorted(out)


def warm_decode_buckets(llm: LLM, spans: list[tuple[int, int]], batch: int = 1) -> None:
    """Build the compiled decode graphs of `batch` rows for every KV-length bucket the requests will visit, before
    a timed run: a bucket first met inside it would put a compile into the timing. One short request per bucket,
    its first decode step in the middle of the bucket."""
    comp = llm.options.compile
    for sb in decode_buckets(llm, spans):
        n = min(sb - comp.bucket // 2, llm.config.max_position - 3)
        if n >= 1:
            llm.generate([prompt_of(llm, n)] * batch, max_new_tokens=2, ignore_eos=True)


@dataclass(frozen=True)
class SpeedConfig:
    prompt_len: int = 128
    new_tokens: int = 64
    prefill_len: int = 512
    repeats: int = 3

    def __post_init__(self) -> None:
        if min(self.prompt_len, self.new_tokens, self.prefill_len, self.repeats) < 1 or self.new_tokens < 2:
            raise ValueError("speed settings must be positive (and new_tokens >= 2)")


@dataclass
class Speed:
    decode_tok_s: float  # batch 1, median of `repeats`
    prefill_tok_s: float  # prompt tokens / t_prefill, median
    decode_runs: list[float] = field(default_factory=list)
    prefill_runs: list[float] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


@torch.inference_mode()
def measure_speed(llm: LLM, cfg: SpeedConfig | None = None) -> Speed:
    """Decode tok/s at batch 1 (prompt + new tokens, EOS ignored) and prefill tok/s; warm-up first, medians."""
    cfg = cfg or SpeedConfig()
    window = llm.config.max_position
    prefill_len = min(cfg.prefill_len, window - 2)  # small test models have short context windows
    prompt_len = min(cfg.prompt_len, window - cfg.new_tokens - 2)
    if prompt_len < 1:
        raise ValueError(f"new_tokens {cfg.new_tokens} does not fit the context window of {window}")
    short, long = prompt_of(llm, prompt_len), prompt_of(llm, prefill_len)
    cached = llm.engine_config.enable_prefix_cache
    llm.reset_engine(enable_prefix_cache=False)  # repeats of one prompt would otherwise skip the prefill
    try:
        llm.generate(short, max_new_tokens=4, ignore_eos=True)  # warm-up: allocator, thread pool, kernels
        warm_decode_buckets(llm, [(prompt_len, cfg.new_tokens)])
        llm.generate(long, max_new_tokens=1, ignore_eos=True)
        dec, pre = [], []
        for _ in range(cfg.repeats):
            o = llm.generate(short, max_new_tokens=cfg.new_tokens, ignore_eos=True)[0]
            n = len(o.token_ids)
            dec.append((n - 1) / o.timings["t_decode"])  # the first new token comes out of prefill
            o = llm.generate(long, max_new_tokens=1, ignore_eos=True)[0]
            pre.append(len(o.prompt_token_ids) / o.timings["t_prefill"])
    finally:
        llm.reset_engine(enable_prefix_cache=cached)
    return Speed(statistics.median(dec), statistics.median(pre), dec, pre,
                 {"prompt_len": prompt_len, "new_tokens": cfg.new_tokens, "prefill_len": prefill_len,
                  "repeats": cfg.repeats, "threads": torch.get_num_threads()})


SLOW_CAUSES = {
    "bf16": "half-precision matmul plus fp32<->half casts per call cost more than the bytes saved on this CPU",
    "fp16": "fp16 matmul has no native path on most x86 CPUs (needs AVX512-FP16/AMX-FP16)",
    "int8": "int8 weights must be converted for every matmul; it only pays off when weights stream from DRAM",
    "int8-dyn": "per-token activation quantization and fbgemm call overhead exceed the bandwidth saved",
    "int4": "the int4 kernel unpacks nibbles per call; prefill dequantizes each weight before its GEMM",
    "prune": "unstructured / 2:4 sparsity keeps dense matrices: no sparse kernel on AVX2",
    "svd": "two thinner matmuls cost more calls than they save FLOPs at this size",
}


def slow_cause(recipe_steps: list[str]) -> str:
    for tok in reversed(recipe_steps):
        for key in sorted(SLOW_CAUSES, key=len, reverse=True):
            if tok.startswith(key):
                return SLOW_CAUSES[key]
    return "kernel overhead exceeds the memory traffic saved at this model size"
