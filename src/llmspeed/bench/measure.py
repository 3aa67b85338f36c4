"""Timing primitives shared by every engine the bench drives: one run's figures, and their summary."""

from __future__ import annotations

import resource
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmspeed.bench.config import Scenario


@dataclass
class RunResult:
    """One timed run of a scenario (all requests of the batch together)."""

    ttft_s: float  # arrival -> first token of the first request
    e2e_s: float  # arrival -> last token of the batch
    tokens_per_seq: list[int]  # completion tokens each request produced
    t_decode: float | None = None  # engine decode time (None: derive as e2e - ttft)
    stages: dict[str, float] = field(default_factory=dict)  # t_pre, t_prefill, t_decode, t_post if known
    spec: dict[str, float] = field(default_factory=dict)  # speculative decoding: draft/accepted tokens, verifies


def stats(xs: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs),
            "stdev": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def path_size(path: str | Path) -> int:
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else 0


def run_scenario(run: Callable[[Scenario, int], RunResult], sc: Scenario, repeats: int, warmup: int,
                 bytes_per_step: Callable[[int, int], float] | None = None,
                 bandwidth_gbs: float | None = None) -> dict[str, Any]:
    """Warm up, then `repeats` timed runs; medians and spread of TTFT, TPOT, E2E, tok/s, achieved GB/s.

    `run(scenario, new_tokens)` does one batch; `bytes_per_step(batch, context_len)` gives the bytes one
    decode step reads (weights + KV), for achieved GB/s.
    """
    for _ in range(warmup):
        run(sc, min(sc.new_tokens, 8))
    runs = [run(sc, sc.new_tokens) for _ in range(repeats)]
    n = sc.new_tokens
    ok = all(t == n for r in runs for t in r.tokens_per_seq) and all(len(r.tokens_per_seq) == sc.batch for r in runs)
    tpot = [(r.e2e_s - r.ttft_s) / (n - 1) for r in runs] if n > 1 else []
    out: dict[str, Any] = {
        "batch": sc.batch, "prompt_tokens": sc.prompt_len, "new_tokens": n, "tokens_ok": ok,
        "tokens_produced": [r.tokens_per_seq for r in runs],
        "ttft_ms": stats([1e3 * r.ttft_s for r in runs]),
        "e2e_s": stats([r.e2e_s for r in runs]),
        "tok_s": stats([sc.batch * n / r.e2e_s for r in runs]),  # completion tokens / s, whole batch
        "tpot_ms": stats([1e3 * t for t in tpot]) if tpot else None,
        "decode_tok_s": None, "achieved_gbs": None, "pct_of_bandwidth": None,
    }
    if sc.kind == "prefill":
        out["prefill_tok_s"] = stats([sc.prompt_len / r.ttft_s for r in runs])
    if n > 1:
        t_dec = [r.t_decode if r.t_decode is not None else r.e2e_s - r.ttft_s for r in runs]
        out["decode_tok_s"] = stats([sc.batch * (n - 1) / t for t in t_dec])
        if bytes_per_step is not None:
            step_bytes = bytes_per_step(sc.batch, sc.prompt_len + n // 2)
            gbs = [step_bytes * (n - 1) / t / 1e9 for t in t_dec]
            out["achieved_gbs"] = statistics.median(gbs)
            if bandwidth_gbs:
                out["pct_of_bandwidth"] = 100 * out["achieved_gbs"] / bandwidth_gbs
    spec_runs = [r.spec for r in runs if r.spec]
    if spec_runs:
        n_d, n_a, n_v = (sum(s[k] for s in spec_runs) for k in ("draft_tokens", "accepted_tokens", "verifies"))
        out["speculative"] = {"draft_tokens": n_d, "accepted_tokens": n_a, "verifies": n_v,
                              "acceptance_rate": n_a / n_d if n_d else 0.0,
                              "mean_accepted_len": (n_a + n_v) / n_v if n_v else 0.0}
    stage_runs = [r.stages for r in runs if r.stages]
    if stage_runs:
        out["stages"] = {k: statistics.median(s[k] for s in stage_runs) for k in stage_runs[0]}
    return out
