"""What `llmspeed auto` optimizes and the accuracy budget it must stay inside (Intel Neural Compressor's terms).

Criteria: `max_ppl_increase` is relative (0.03 = perplexity at most 3 % above the original's, held-out plays);
`max_kl` (mean KL(original || candidate) per token), `min_top1` (top-1 agreement with the original) and
`min_task_acc` (last-word accuracy, or lm-eval's `acc` on a local multiple-choice file given as `task`) are
absolute. Each criterion becomes an *excess*: 1.0 sits exactly on the
limit, above 1.0 violates it. The screening slice rejects only beyond `screen_slack`; acceptance is decided on
the full evaluation alone (search.py).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import PurePath
from typing import Any

OBJECTIVES = ("decode", "prefill", "ttft", "throughput", "size")
SERVING_OBJECTIVES = ("throughput", "ttft")  # these also search the engine's serving settings
# objective -> (speed-dict key, unit, higher is better)
OBJECTIVE_METRIC: dict[str, tuple[str, str, bool]] = {
    "decode": ("decode_tok_s", "tok/s", True),
    "prefill": ("prefill_tok_s", "tok/s", True),
    "ttft": ("ttft_ms", "ms", False),
    "throughput": ("throughput_tok_s", "tok/s", True),
    "size": ("size_mb", "MB", False),
}


def parse_fraction(text: str | float, name: str) -> float:
    """'3%' -> 0.03, '0.03' -> 0.03, 0.03 -> 0.03; a bare number above 1 is ambiguous and refused."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        v = float(text)
    else:
        s = str(text).strip()
        m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%?)", s)
        if m is None:
            raise ValueError(f"{name} must be a number or a percentage such as 3% or 0.03, got {text!r}")
        v = float(m.group(1)) / (100.0 if m.group(2) else 1.0)
        if not m.group(2) and v > 1.0:
            raise ValueError(f"{name} {text!r} is ambiguous: write {v:g}% or {v / 100:g}")
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be >= 0, got {text!r}")
    return v


@dataclass(frozen=True)
class Criteria:
    """The accuracy budget; None = criterion not used."""

    max_ppl_increase: float | None = 0.03
    max_kl: float | None = None
    min_top1: float | None = None
    min_task_acc: float | None = None
    task: str | None = None  # a multiple-choice JSONL file for min_task_acc (None: the built-in last-word task)

    def __post_init__(self) -> None:
        if self.task is not None and self.min_task_acc is None:
            raise ValueError("--task is the task of --min-task-acc: give --min-task-acc too")
        for name in ("max_ppl_increase", "max_kl"):
            v = getattr(self, name)
            if v is not None and (not math.isfinite(v) or v < 0):
                raise ValueError(f"{name} must be >= 0, got {v}")
        for name in ("min_top1", "min_task_acc"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if all(getattr(self, k) is None for k in ("max_ppl_increase", "max_kl", "min_top1", "min_task_acc")):
            raise ValueError("give at least one accuracy criterion")

    @property
    def needs_task(self) -> bool:
        return self.min_task_acc is not None

    def excess(self, q: dict[str, Any]) -> dict[str, float]:
        """criterion -> value / limit, normalized so that 1.0 is on the limit and > 1.0 violates it.

        `q` holds `delta_ppl` (fraction), `kl`, `top1`, `task_acc`; a criterion whose figure is missing counts as
        violated (inf): an unmeasured candidate is never accepted.
        """

        def ratio(value: float | None, limit: float) -> float:
            if value is None or not math.isfinite(value):
                return math.inf
            if limit <= 0:
                return 0.0 if value <= 0 else math.inf
            return max(value, 0.0) / limit

        out: dict[str, float] = {}
        if self.max_ppl_increase is not None:
            out["max_ppl_increase"] = ratio(q.get("delta_ppl"), self.max_ppl_increase)
        if self.max_kl is not None:
            out["max_kl"] = ratio(q.get("kl"), self.max_kl)
        if self.min_top1 is not None:
            v = q.get("top1")
            out["min_top1"] = ratio(None if v is None else 1.0 - v, 1.0 - self.min_top1)
        if self.min_task_acc is not None:
            v = q.get("task_acc")
            out["min_task_acc"] = ratio(None if v is None else 1.0 - v, 1.0 - self.min_task_acc)
        return out

    def worst(self, q: dict[str, Any]) -> float:
        return max(self.excess(q).values())

    def describe(self) -> str:
        parts = []
        if self.max_ppl_increase is not None:
            parts.append(f"ΔPPL <= {100 * self.max_ppl_increase:g}%")
        if self.max_kl is not None:
            parts.append(f"KL <= {self.max_kl:g}")
        if self.min_top1 is not None:
            parts.append(f"top-1 >= {self.min_top1:g}")
        if self.min_task_acc is not None:
            name = "last-word" if self.task is None else PurePath(self.task).name
            parts.append(f"{name} acc >= {self.min_task_acc:g}")
        return ", ".join(parts)


@dataclass(frozen=True)
class AutoConfig:
    objective: str = "decode"
    criteria: Criteria = Criteria()
    budget_minutes: float = 30.0
    max_trials: int = 40
    confirm_top: int = 3  # survivors confirmed on the full eval + full benchmark
    screen_slack: float = 1.5  # the screening slice rejects only when an excess exceeds this
    reserve_share: float = 0.35  # of the time budget kept for confirmation, benchmark, ablation and saving
    screen_eval_tokens: int = 1024
    full_eval_tokens: int = 8192
    screen_task_n: int = 60
    full_task_n: int = 300
    new_tokens: int = 64  # decode tokens of a speed run (screening and benchmark alike)
    repeats: int = 3  # full benchmark: median of
    # screening speed run: median of (one 32-token run moved the same candidate 143 <-> 193 tok/s between runs,
    # and every front point is a screening figure)
    screen_repeats: int = 3
    concurrency: int = 16  # requests of the throughput / ttft workload
    seed: int = 0
    ablation: bool = True
    profile: bool = True  # order the seeds by `llmspeed profile`'s verdict (a short profile of the original)
    # recipe steps that turn the original into what `llmspeed serve --model M` runs by default: the throughput /
    # ttft baseline ("server defaults"); api.served_steps(M) says it for a --model value
    served_steps: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}")
        if not self.budget_minutes > 0 or not math.isfinite(self.budget_minutes):
            raise ValueError(f"budget_minutes must be > 0, got {self.budget_minutes}")
        for name in ("max_trials", "confirm_top", "screen_eval_tokens", "full_eval_tokens", "repeats",
                     "screen_repeats", "concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.new_tokens < 4:
            raise ValueError(f"new_tokens must be >= 4, got {self.new_tokens}")
        if self.screen_slack < 1.0:
            raise ValueError(f"screen_slack must be >= 1 (the slice may only reject clear violations), "
                             f"got {self.screen_slack}")
        if not 0.0 <= self.reserve_share < 1.0:
            raise ValueError(f"reserve_share must be in [0, 1), got {self.reserve_share}")
        if self.screen_eval_tokens > self.full_eval_tokens:
            raise ValueError(f"the screening slice ({self.screen_eval_tokens} tokens) must not exceed the full eval "
                             f"({self.full_eval_tokens})")
        if not all(isinstance(t, str) and t for t in self.served_steps):
            raise ValueError(f"served_steps must be recipe tokens, got {self.served_steps!r}")
        if self.screen_task_n < 1 or self.full_task_n < 1:
            raise ValueError("task passage counts must be >= 1")

    @property
    def metric(self) -> tuple[str, str, bool]:
        return OBJECTIVE_METRIC[self.objective]

    def score(self, speed: dict[str, Any]) -> float:
        """The objective as 'higher is better' (ms and MB negated); -inf when the figure is missing."""
        key, _, higher = self.metric
        v = speed.get(key)
        if v is None or not math.isfinite(float(v)):
            return -math.inf
        return float(v) if higher else -float(v)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
