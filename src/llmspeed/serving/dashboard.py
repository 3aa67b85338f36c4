"""The live dashboard's data: the app's own Prometheus registry sampled once a second into bounded ring buffers,
reduced to the figures an operator watches (rates over a short window, latency quantiles over a longer one).

No second bookkeeping: every figure is derived from what /metrics already exposes, so the dashboard and a
Prometheus scrape can never disagree, and counters another part of the server adds later (speculative decoding's
`llmspeed:spec_decode_*`) show up here the moment they exist.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Snapshot = dict[str, float]  # 'name{label="v",...}' -> value, as one scrape would show it

LATENCIES = {"ttft": "llmspeed:time_to_first_token_seconds", "tpot": "llmspeed:time_per_output_token_seconds",
             "e2e": "llmspeed:e2e_request_latency_seconds"}
QUANTILES = (0.5, 0.9, 0.99)
SPEC_DRAFT = "llmspeed:spec_decode_num_draft_tokens_total"
SPEC_ACCEPTED = "llmspeed:spec_decode_num_accepted_tokens_total"


@dataclass(frozen=True)
class DashboardConfig:
    interval_s: float = 1.0  # one sample per interval
    history_s: float = 900.0  # points kept for the charts (15 minutes at 1 s)
    rate_window_s: float = 5.0  # request and token rates: averaged over this window
    quantile_window_s: float = 60.0  # TTFT / TPOT / E2E quantiles and hit rates: over this window

    def __post_init__(self) -> None:
        if not self.interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {self.interval_s}")
        for name in ("history_s", "rate_window_s", "quantile_window_s"):
            if getattr(self, name) < self.interval_s:
                raise ValueError(f"{name} must be >= interval_s ({self.interval_s}), got {getattr(self, name)}")


def read_registry(registry: Any) -> Snapshot:
    """Flatten a prometheus_client registry into one dict (keys interned: the same strings every second)."""
    out: Snapshot = {}
    for fam in registry.collect():
        for s in fam.samples:
            if s.name.endswith("_created"):
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[sys.intern(f"{s.name}{{{labels}}}" if labels else s.name)] = float(s.value)
    return out


def _base(key: str) -> str:
    return key.partition("{")[0]


def total(snap: Snapshot, name: str) -> float | None:
    """Sum of a metric over all its label values; None when the server does not expose it."""
    vals = [v for k, v in snap.items() if _base(k) == name]
    return sum(vals) if vals else None


def labelled(snap: Snapshot, name: str, label: str, value: str) -> float:
    return snap.get(f'{name}{{{label}="{value}"}}', 0.0)


def buckets(snap: Snapshot, name: str) -> list[tuple[float, float]]:
    """A histogram's cumulative buckets, sorted by upper bound: [(le, count), ..., (inf, count)]."""
    out = []
    prefix = f'{name}_bucket{{le="'
    for k, v in snap.items():
        if k.startswith(prefix):
            out.append((float(k[len(prefix):-2]), v))
    return sorted(out)


def histogram_quantile(q: float, cum: list[tuple[float, float]]) -> float | None:
    """Prometheus' `histogram_quantile`: linear interpolation inside the bucket holding rank q·n; a rank in the
    +Inf bucket answers the largest finite bound. None with no observations."""
    if not cum or cum[-1][1] <= 0:
        return None
    rank = q * cum[-1][1]
    lo_bound, lo_count = 0.0, 0.0
    for le, count in cum:
        if count >= rank:
            if math.isinf(le):
                return lo_bound
            width = count - lo_count
            return lo_bound + (le - lo_bound) * ((rank - lo_count) / width if width > 0 else 1.0)
        lo_bound, lo_count = le, count
    return lo_bound


def _delta_buckets(new: Snapshot, old: Snapshot, name: str) -> list[tuple[float, float]]:
    olds = dict(buckets(old, name))
    return [(le, max(0.0, c - olds.get(le, 0.0))) for le, c in buckets(new, name)]


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or den is None or den <= 0 else num / den


def _diff(new: Snapshot, old: Snapshot, name: str) -> float | None:
    a, b = total(new, name), total(old, name)
    return None if a is None else max(0.0, a - (b or 0.0))


def _cache_hits(snap: Snapshot) -> tuple[float, float]:
    """(hits, lookups) of the response cache: every result but `miss` was answered without running the model
    (`hit-l1`, `hit-l2`, and `coalesced` once single-flight exists)."""
    name = "llmspeed:response_cache_total"
    lookups = total(snap, name) or 0.0
    return lookups - labelled(snap, name, "result", "miss"), lookups


def derive_point(t: float, now: Snapshot, rate_old: tuple[float, Snapshot], q_old: tuple[float, Snapshot]) -> dict:
    """One chart point at time `t` from the current snapshot and the ones a rate window / quantile window ago.
    Values that cannot be known yet (no observation in the window, a counter the server lacks) are None."""
    t_r, old_r = rate_old
    t_q, old_q = q_old
    dt_r = max(t - t_r, 1e-9)
    p: dict[str, Any] = {"t": round(t, 3)}
    for key, name in (("req_s", "llmspeed:request_success_total"), ("tok_s", "llmspeed:generation_tokens_total"),
                      ("prompt_tok_s", "llmspeed:prompt_tokens_total"),
                      ("rejected_s", "llmspeed:requests_rejected_total")):
        d = _diff(now, old_r, name) if t > t_r else None
        p[key] = None if d is None else d / dt_r
    for short, name in LATENCIES.items():
        cum = _delta_buckets(now, old_q, name)
        for q in QUANTILES:
            p[f"{short}_p{round(q * 100)}"] = histogram_quantile(q, cum)
    p["running"] = now.get("llmspeed:num_requests_running")
    p["waiting"] = now.get("llmspeed:num_requests_waiting")
    p["kv_used"] = now.get("llmspeed:kv_cache_blocks_used")
    p["kv_total"] = now.get("llmspeed:kv_cache_blocks_total")
    p["prefix_hit"] = _ratio(_diff(now, old_q, "llmspeed:prefix_cache_hits_total"),
                             _diff(now, old_q, "llmspeed:prefix_cache_queries_total"))
    (h1, n1), (h0, n0) = _cache_hits(now), _cache_hits(old_q)
    p["resp_hit"] = _ratio(h1 - h0, n1 - n0)
    p["spec_accept"] = _ratio(_diff(now, old_q, SPEC_ACCEPTED), _diff(now, old_q, SPEC_DRAFT))
    p["window_s"] = {"rate": round(t - t_r, 3), "quantile": round(t - t_q, 3)}
    return p


def totals(now: Snapshot) -> dict[str, Any]:
    """Since-start figures for the header tiles."""
    hits, lookups = _cache_hits(now)
    return {
        "requests": total(now, "llmspeed:request_success_total") or 0.0,
        "generated_tokens": total(now, "llmspeed:generation_tokens_total") or 0.0,
        "rejected": total(now, "llmspeed:requests_rejected_total") or 0.0,
        "failures": total(now, "llmspeed:request_failures_total") or 0.0,
        "preemptions": total(now, "llmspeed:num_preemptions_total") or 0.0,
        "prefix_hit": _ratio(total(now, "llmspeed:prefix_cache_hits_total"),
                             total(now, "llmspeed:prefix_cache_queries_total")),
        "resp_hit": _ratio(hits, lookups),
        "spec_accept": _ratio(total(now, SPEC_ACCEPTED), total(now, SPEC_DRAFT)),
        "spec_available": total(now, SPEC_DRAFT) is not None,
    }


class DashboardSampler:
    """Samples `read()` (a registry flattener) every `interval_s`; keeps the raw snapshots needed for the windows and
    the derived points for `history_s`. Not thread-safe by design: `sample` and `points_since` run on the event loop."""

    def __init__(self, read: Callable[[], Snapshot], config: DashboardConfig | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = config or DashboardConfig()
        self.read, self.clock = read, clock
        c = self.cfg
        self.raw: deque[tuple[float, Snapshot]] = deque(maxlen=math.ceil(c.quantile_window_s / c.interval_s) + 2)
        self.points: deque[dict[str, Any]] = deque(maxlen=math.ceil(c.history_s / c.interval_s))
        self.started = clock()

    def _at_or_before(self, t: float) -> tuple[float, Snapshot]:
        """The newest raw sample no newer than t (else the oldest kept)."""
        best = self.raw[0]
        for s in self.raw:
            if s[0] <= t + 1e-6:
                best = s
            else:
                break
        return best

    def sample(self) -> dict[str, Any]:
        t, snap = self.clock(), self.read()
        self.raw.append((t, snap))  # the first point compares with itself: its rates are unknown (None), not 0
        p = derive_point(t, snap, self._at_or_before(t - self.cfg.rate_window_s),
                         self._at_or_before(t - self.cfg.quantile_window_s))
        self.points.append(p)
        return p

    def due(self) -> bool:
        return not self.points or self.clock() - self.points[-1]["t"] >= self.cfg.interval_s * 0.95

    def data(self, since: float | None = None) -> dict[str, Any]:
        """What /dashboard/data returns: points newer than `since` (all kept ones when None) plus the totals."""
        pts = [p for p in self.points if since is None or p["t"] > since]
        now = self.raw[-1][1] if self.raw else {}
        c = self.cfg
        return {"now": round(self.clock(), 3), "started": round(self.started, 3), "interval_s": c.interval_s,
                "history_s": c.history_s, "rate_window_s": c.rate_window_s, "quantile_window_s": c.quantile_window_s,
                "totals": totals(now), "points": pts}
