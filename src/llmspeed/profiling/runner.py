"""`profile`: measure one request's stage breakdown, its hot ops and per-step overhead, and place it on
this machine's roofline with a verdict."""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from typing import Any

from llmspeed.profiling import roofline
from llmspeed.profiling.host import measure_host_overhead
from llmspeed.profiling.ops import profile_decode_steps
from llmspeed.profiling.prompts import prompt_text
from llmspeed.profiling.stages import StageBreakdown, from_timings, median_breakdown
from llmspeed.profiling.verdict import Figures, diagnose

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProfileConfig:
    prompt_len: int = 128
    new_tokens: int = 128
    batch: int = 1
    repeats: int = 3
    warmup: int = 1
    profile_steps: int = 32  # decode steps under torch.profiler
    trace_path: str | None = None
    recalibrate: bool = False

    def __post_init__(self) -> None:
        for name in ("prompt_len", "new_tokens", "batch", "repeats", "profile_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")


def measure_stages(llm: Any, prompt: str, cfg: ProfileConfig, spec: dict[str, float] | None = None,
                   ) -> list[StageBreakdown]:
    """Warm-up + timed runs; `spec` (if given) sums the timed runs' speculative-decoding counters."""
    prompts = [prompt] * cfg.batch
    runs = []
    for i in range(cfg.warmup + cfg.repeats):
        outs = llm.generate(prompts, max_new_tokens=cfg.new_tokens, ignore_eos=True)
        n = len(outs[0].token_ids)
        if n != cfg.new_tokens:
            raise RuntimeError(f"engine produced {n} tokens, expected {cfg.new_tokens}")
        if i >= cfg.warmup:
            runs.append(from_timings(outs[0].timings, n))
            if spec is not None:
                for o in outs:
                    for k in ("spec_draft_tokens", "spec_accepted_tokens", "spec_verifies"):
                        spec[k] = spec.get(k, 0.0) + o.timings.get(k, 0.0)
    return runs


def model_bytes(llm: Any, batch: int, context_len: int) -> tuple[int, int]:
    """(weight bytes, KV bytes) one decode step reads at `context_len`."""
    kv_elem = llm.engine.kv.layers[0][0].element_size() if llm.engine.kv.layers else 4
    return (roofline.weight_bytes_per_decode_step(llm.model, batch),
            roofline.kv_bytes_per_decode_step(llm.model, context_len, batch, kv_elem))


def run_profile(llm: Any, cfg: ProfileConfig) -> dict[str, Any]:
    """Everything `llmspeed profile` reports, as one JSON-ready dict."""
    cal = roofline.load_or_measure(cfg.recalibrate)
    prompt, n_prompt = prompt_text(llm.tokenizer, cfg.prompt_len)
    spec: dict[str, float] = {}
    runs = measure_stages(llm, prompt, cfg, spec)
    stages = median_breakdown(runs)
    steps = max(cfg.new_tokens - 1, 0)
    step_s = stages.t_decode / steps if steps else 0.0
    host = measure_host_overhead(llm, [prompt] * cfg.batch, max(min(64, steps), 1))  # no profiler attached
    ops = profile_decode_steps(llm, [prompt] * cfg.batch, min(cfg.profile_steps, max(steps, 1)), cfg.trace_path)
    avg_ctx = n_prompt + cfg.new_tokens // 2
    w_bytes, kv_bytes = model_bytes(llm, cfg.batch, avg_ctx)
    dtype = str(llm.dtype).replace("torch.", "")
    fig = Figures(t_pre=stages.t_pre, t_prefill=stages.t_prefill, t_decode=stages.t_decode, t_post=stages.t_post,
                  decode_steps=steps, decode_bytes_per_step=w_bytes + kv_bytes,
                  decode_flops_per_step=roofline.decode_flops(llm.model, avg_ctx, cfg.batch),
                  prefill_flops=roofline.prefill_flops(llm.model, n_prompt, cfg.batch),
                  bandwidth_gbs=cal.bandwidth_gbs, fp32_gflops=cal.fp32_gflops, bf16_gflops=cal.bf16_gflops,
                  dtype=dtype)
    verdict = diagnose(fig)
    # per-step overhead = step wall - compute-kernel self time, both under the profiler (it inflates both);
    # its share applied to the unprofiled step gives the overhead of a normal run
    prof_overhead_ms = max(ops.profiled_step_ms - ops.compute_ms_per_step, 0.0)
    overhead_frac = prof_overhead_ms / ops.profiled_step_ms if ops.profiled_step_ms > 0 else 0.0
    overhead_ms = overhead_frac * step_s * 1e3
    walls = [r.wall for r in runs]
    return {
        "model": llm.source, "recipe": list(llm.recipe), "dtype": dtype, "threads": _threads(),
        "prompt_tokens": n_prompt, "new_tokens": cfg.new_tokens, "batch": cfg.batch, "repeats": cfg.repeats,
        "stages": stages.to_dict(),
        "wall_spread": {"min": min(walls), "max": max(walls), "median": statistics.median(walls)},
        "decode": {"step_ms": step_s * 1e3, "tpot_ms": stages.tpot * 1e3,
                   "tok_s": cfg.batch / step_s if step_s else 0.0,
                   "weight_bytes_per_step": w_bytes, "kv_bytes_per_step": kv_bytes,
                   "roofline_ms": verdict.decode_roofline_s * 1e3, "achieved_gbs": verdict.achieved_gbs,
                   "pct_of_bandwidth": verdict.pct_of_bandwidth,
                   "overhead_ms_per_step": overhead_ms, "overhead_pct": 100 * overhead_frac,
                   "profiled_step_ms": ops.profiled_step_ms, "profiled_compute_ms": ops.compute_ms_per_step,
                   "profiled_overhead_ms": prof_overhead_ms,
                   "host_overhead_ms_per_step": host.host_ms, "graph_ms_per_step": host.graph_ms,
                   "host_measured_step_ms": host.step_ms},
        "prefill": {"flops": fig.prefill_flops, "gflops": verdict.prefill_gflops,
                    "pct_of_peak": verdict.pct_of_peak_flops},
        "ops": ops.to_dict(),
        "calibration": cal.to_dict(),
        "verdict": verdict.to_dict(),
        "trace": cfg.trace_path,
        "speculative": speculative_summary(getattr(llm, "draft", None), spec),
    }


def speculative_summary(draft: Any, counts: dict[str, float]) -> dict[str, Any] | None:
    """Acceptance rate and mean accepted length (tokens a verified row emits per pass) of the timed runs."""
    if draft is None:
        return None
    n, acc, ver = (counts.get(k, 0.0) for k in ("spec_draft_tokens", "spec_accepted_tokens", "spec_verifies"))
    return {"draft": draft.label, "draft_tokens": int(n), "accepted_tokens": int(acc), "verifies": int(ver),
            "acceptance_rate": acc / n if n else 0.0, "mean_accepted_len": (acc + ver) / ver if ver else 0.0}


def _threads() -> int:
    import torch

    return torch.get_num_threads()
