"""The request cycle T = t_pre + t_prefill + t_decode + t_post, with shares and per-token decode latency."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

STAGES = ("t_pre", "t_prefill", "t_decode", "t_post")


@dataclass(frozen=True)
class StageBreakdown:
    t_pre: float
    t_prefill: float
    t_decode: float
    t_post: float
    wall: float  # measured end-to-end wall time of the request
    new_tokens: int

    def __post_init__(self) -> None:
        if min(self.t_pre, self.t_prefill, self.t_decode, self.t_post, self.wall) < 0 or self.new_tokens < 0:
            raise ValueError("stage times and token counts must be >= 0")

    @property
    def total(self) -> float:
        return self.t_pre + self.t_prefill + self.t_decode + self.t_post

    @property
    def t_compute(self) -> float:
        return self.t_prefill + self.t_decode

    @property
    def shares(self) -> dict[str, float]:
        tot = self.total
        return {k: (100 * getattr(self, k) / tot if tot > 0 else 0.0) for k in STAGES}

    @property
    def tpot(self) -> float:
        """Per-token decode latency: the first token comes from the prefill."""
        return self.t_decode / (self.new_tokens - 1) if self.new_tokens > 1 else 0.0

    @property
    def unaccounted(self) -> float:
        """Wall time outside the four stages (scheduling, bookkeeping), as a fraction of the wall time."""
        return (self.wall - self.total) / self.wall if self.wall > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total, "t_compute": self.t_compute, "shares_pct": self.shares,
                "tpot": self.tpot, "unaccounted": self.unaccounted}


def from_timings(timings: Mapping[str, float], new_tokens: int) -> StageBreakdown:
    """From one `GenerationOutput.timings` dict."""
    return StageBreakdown(*(float(timings[k]) for k in STAGES), wall=float(timings["wall"]), new_tokens=new_tokens)


def median_breakdown(runs: Sequence[StageBreakdown]) -> StageBreakdown:
    """Stage-wise median over repeated runs."""
    if not runs:
        raise ValueError("no runs to summarise")
    med = {k: statistics.median(getattr(r, k) for r in runs) for k in (*STAGES, "wall")}
    return StageBreakdown(**med, new_tokens=runs[0].new_tokens)
