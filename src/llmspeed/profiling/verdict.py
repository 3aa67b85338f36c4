"""Bottleneck verdict: a pure function of measured figures -> what bounds the request, and which recipes attack it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

MEMORY, COMPUTE, OVERHEAD, PREPROCESSING = "memory-bound", "compute-bound", "overhead-bound", "preprocessing-bound"


@dataclass(frozen=True)
class Thresholds:
    overhead_ratio: float = 2.5  # step time / roofline bound above this -> overhead-bound
    preprocessing_share: float = 0.3  # (t_pre + t_post) / T above this -> preprocessing-bound
    compute_fraction: float = 0.4  # prefill achieving >= 40% of peak FLOP/s -> compute-bound
    bf16_slow: float = 2.0  # fp32/bf16 GEMM throughput above this -> never bf16

    def __post_init__(self) -> None:
        if self.overhead_ratio <= 1 or not 0 < self.preprocessing_share < 1 or not 0 < self.compute_fraction <= 1:
            raise ValueError("thresholds: overhead_ratio > 1, preprocessing_share and compute_fraction in (0, 1]")


@dataclass(frozen=True)
class Figures:
    """Per-request times (s) and the work the model does, plus the machine's calibration."""

    t_pre: float
    t_prefill: float
    t_decode: float
    t_post: float
    decode_steps: int  # decode steps in t_decode (new tokens - 1)
    decode_bytes_per_step: float
    decode_flops_per_step: float
    prefill_flops: float
    bandwidth_gbs: float
    fp32_gflops: float
    bf16_gflops: float
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if min(self.t_pre, self.t_prefill, self.t_decode, self.t_post) < 0 or self.decode_steps < 0:
            raise ValueError("figures: times and step counts must be >= 0")
        if self.bandwidth_gbs <= 0 or self.fp32_gflops <= 0:
            raise ValueError("figures: bandwidth and FLOP/s must be > 0")


@dataclass(frozen=True)
class Verdict:
    bound: str  # one of MEMORY, COMPUTE, OVERHEAD, PREPROCESSING
    phase: str  # the phase that dominates T: "decode", "prefill" or "pre/post"
    decode_bound: str
    prefill_bound: str
    decode_step_s: float
    decode_roofline_s: float  # bytes / bandwidth (or FLOPs / peak when larger)
    roofline_ratio: float  # decode step time / roofline bound
    achieved_gbs: float
    pct_of_bandwidth: float
    prefill_gflops: float
    pct_of_peak_flops: float
    recipes: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


RECIPES = {
    MEMORY: ["int4-g32", "int8"],
    OVERHEAD: ["compile", "fused projections (one QKV / gate-up matmul)", "bigger batch"],
    PREPROCESSING: ["parallel tokenization (--workers)", "cache tokenized prompts"],
}


def _peak(fig: Figures) -> float:
    return fig.bf16_gflops if fig.dtype in ("bfloat16", "float16") else fig.fp32_gflops


def decode_bound(fig: Figures, th: Thresholds) -> tuple[str, float, float]:
    """(bound, step time, roofline time) of one decode step."""
    if fig.decode_steps == 0 or fig.t_decode == 0:
        return "n/a", 0.0, 0.0
    step = fig.t_decode / fig.decode_steps
    t_mem = fig.decode_bytes_per_step / (fig.bandwidth_gbs * 1e9)
    t_cmp = fig.decode_flops_per_step / (_peak(fig) * 1e9)
    bound_t = max(t_mem, t_cmp)
    if step > th.overhead_ratio * bound_t:
        return OVERHEAD, step, bound_t
    return (COMPUTE if t_cmp > t_mem else MEMORY), step, bound_t


def prefill_bound(fig: Figures, th: Thresholds) -> tuple[str, float]:
    """(bound, achieved GFLOP/s) of the prefill."""
    if fig.t_prefill <= 0 or fig.prefill_flops <= 0:
        return "n/a", 0.0
    gflops = fig.prefill_flops / fig.t_prefill / 1e9
    return (COMPUTE if gflops >= th.compute_fraction * _peak(fig) else OVERHEAD), gflops


def precision_advice(fig: Figures, th: Thresholds) -> str:
    slow = fig.fp32_gflops / fig.bf16_gflops if fig.bf16_gflops > 0 else float("inf")
    if slow >= th.bf16_slow:
        return (f"fp32 or int8-dyn for prefill — never bf16 on this CPU "
                f"(bf16 GEMM measured {slow:.0f}x slower than fp32)")
    if slow <= 1 / th.bf16_slow:
        return (f"bf16 for prefill (bf16 GEMM measured {1 / slow:.1f}x faster than fp32 here: "
                f"AMX/AVX512-BF16), or int8-dyn")
    return "fp32 or int8-dyn for prefill (bf16 GEMM about as fast as fp32 here)"


def diagnose(fig: Figures, th: Thresholds | None = None) -> Verdict:
    """Which resource bounds this request, measured against this machine's roofline."""
    th = th or Thresholds()
    total = fig.t_pre + fig.t_prefill + fig.t_decode + fig.t_post
    d_bound, step, bound_t = decode_bound(fig, th)
    p_bound, p_gflops = prefill_bound(fig, th)
    ach = fig.decode_bytes_per_step / step / 1e9 if step > 0 else 0.0
    reasons: list[str] = []
    if step > 0:
        reasons.append(f"decode step {step * 1e3:.2f} ms vs roofline {bound_t * 1e3:.2f} ms "
                       f"({step / bound_t:.1f}x); {ach:.1f} GB/s = {100 * ach / fig.bandwidth_gbs:.0f}% of "
                       f"{fig.bandwidth_gbs:.1f} GB/s")
    if p_gflops > 0:
        reasons.append(f"prefill {p_gflops:.1f} GFLOP/s = {100 * p_gflops / _peak(fig):.0f}% of peak "
                       f"{_peak(fig):.0f} GFLOP/s ({fig.dtype})")
    pre_share = (fig.t_pre + fig.t_post) / total if total > 0 else 0.0
    if pre_share > th.preprocessing_share:
        bound, phase = PREPROCESSING, "pre/post"
        reasons.append(f"tokenize + detokenize take {100 * pre_share:.0f}% of the request")
    elif fig.t_decode >= fig.t_prefill:
        bound, phase = d_bound, "decode"
    else:
        bound, phase = p_bound, "prefill"
    recipes = list(RECIPES.get(bound, []))
    if bound == COMPUTE:
        recipes = [precision_advice(fig, th)]
    elif p_bound == COMPUTE and phase != "prefill":
        recipes.append(precision_advice(fig, th))
    return Verdict(bound=bound, phase=phase, decode_bound=d_bound, prefill_bound=p_bound, decode_step_s=step,
                   decode_roofline_s=bound_t, roofline_ratio=step / bound_t if bound_t > 0 else 0.0,
                   achieved_gbs=ach, pct_of_bandwidth=100 * ach / fig.bandwidth_gbs, prefill_gflops=p_gflops,
                   pct_of_peak_flops=100 * p_gflops / _peak(fig) if p_gflops else 0.0, recipes=recipes,
                   reasons=reasons)
