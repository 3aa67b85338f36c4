"""A deterministic stub measurer and a fake clock for the search logic (no model, no timing noise)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from llmspeed.auto.space import Candidate, ModelFacts

# decode tok/s gained per step kind, and ΔPPL (fraction) each costs on the *full* eval
GAIN = {"int4": 20.0, "int8": 10.0, "int8-dyn": 4.0, "compile": 15.0, "a8": 8.0, "int8-head": 3.0, "prune": 1.0,
        "svd": -2.0}
COST = {"int4-g32": 0.020, "int4-g64": 0.026, "int4-g128": 0.045, "int8": 0.002, "int8-dyn": 0.004,
        "a8": 0.015, "int8-head": 0.001, "prune": 0.05, "svd": 0.03, "compile": 0.0}


def _kind(tok: str, table: dict[str, float]) -> float:
    for k in sorted(table, key=len, reverse=True):
        if tok.startswith(k):
            return table[k]
    return 0.0


@dataclass
class FakeClock:
    t: float = 0.0

    def __call__(self) -> float:
        return self.t


@dataclass
class StubMeasurer:
    """Figures are a pure function of the recipe. `screen_bias` is added to the screened ΔPPL (the slice is
    optimistic or pessimistic); `full_extra(cand)` adds to the full ΔPPL of chosen candidates."""

    clock: FakeClock = field(default_factory=FakeClock)
    screen_cost_s: float = 60.0
    confirm_cost_s: float = 120.0
    screen_bias: float = 0.0
    full_extra: Any = None
    bench_bonus: Any = None  # cand -> tok/s added in the full benchmark only (the short screening run misranked)
    fail_after: int | None = None  # raise KeyboardInterrupt at this screen call (a killed run)
    verdict_value: str | None = "memory-bound"
    screened: list[str] = field(default_factory=list)
    screen_times: list[float] = field(default_factory=list)
    confirmed: list[str] = field(default_factory=list)
    saved: list[str] = field(default_factory=list)
    benched: list[list[Candidate]] = field(default_factory=list)
    sped: list[str] = field(default_factory=list)  # speed-only runs (draft candidates)
    draft_gain: float = 12.0  # tok/s a draft adds (the user's prompts are grounded)
    student_gain: float = 40.0  # tok/s a distilled student (Candidate.model) adds
    student_cost: float = 0.01  # and the ΔPPL it costs against the teacher
    groups: tuple[int, ...] = (32, 64, 128)  # int4 group sizes that fit the (stub) model
    mlp_units: int | None = None  # its MLP width (None: unknown)

    def figures(self, c: Candidate) -> dict[str, float]:
        v = 10.0 + sum(_kind(t, GAIN) for t in c.steps) + (self.draft_gain if c.draft else 0.0) \
            + (self.student_gain if c.model else 0.0)
        threads = c.serving_dict.get("threads", 2)
        size = 540.0 * (0.25 if any(t.startswith("int4") for t in c.steps) else
                        0.5 if any(t.startswith("int8") and t != "int8-head" for t in c.steps) else 1.0)
        return {"decode_tok_s": v, "prefill_tok_s": 5 * v, "size_mb": size, "throughput_tok_s": v * threads,
                "ttft_ms": 1000.0 / v}

    def dppl(self, c: Candidate) -> float:
        return sum(_kind(t, COST) for t in c.steps) + (self.student_cost if c.model else 0.0)

    def q(self, d: float) -> dict[str, float]:
        return {"delta_ppl": d, "delta_ppl_pct": 100 * d, "kl": d / 2, "top1": 1.0 - d, "task_acc": 0.5 - d}

    # -- Measurer -------------------------------------------------------------------------------------------
    def verdict(self) -> str | None:
        return self.verdict_value

    def machine(self) -> dict[str, Any]:
        return {"cpu": "stub"}

    def max_threads(self) -> int:
        return 2

    def model_facts(self) -> ModelFacts:
        return ModelFacts(self.groups, self.mlp_units)

    def screen(self, c: Candidate) -> dict[str, Any]:
        if self.fail_after is not None and len(self.screened) >= self.fail_after:
            raise KeyboardInterrupt
        self.screen_times.append(self.clock.t)
        self.screened.append(c.key)
        self.clock.t += self.screen_cost_s
        return {"quality": self.q(self.dppl(c) + self.screen_bias), "speed": self.figures(c)}

    def speed(self, c: Candidate) -> dict[str, Any]:  # the Measurer's speed-only run
        self.sped.append(c.key)
        self.clock.t += self.screen_cost_s / 4
        return self.figures(c)

    def confirm(self, c: Candidate) -> dict[str, Any]:
        self.confirmed.append(c.key)
        self.clock.t += self.confirm_cost_s
        extra = self.full_extra(c) if self.full_extra else 0.0
        return self.q(self.dppl(c) + extra)

    def benchmark(self, cands: list[Candidate]) -> list[dict[str, Any]]:
        self.benched.append(list(cands))
        self.clock.t += 30.0 * len(cands)
        out = [self.figures(c) for c in cands]
        for c, s in zip(cands, out, strict=True):
            s["decode_tok_s"] += self.bench_bonus(c) if self.bench_bonus else 0.0
        return out

    def ablation(self, c: Candidate) -> list[dict[str, Any]]:
        rows, t0 = [], None
        stages = [(c.steps[i - 1] if i else "original", Candidate(steps=c.steps[:i])) for i in range(len(c.steps) + 1)]
        if c.draft:
            stages.append((f"draft {c.draft}", c))
        for name, s in stages:
            T = 1.0 / self.figures(s)["decode_tok_s"]
            t0 = t0 or T
            rows.append({"added": name, "recipe": s.recipe or "original", "t_pre": 0.0, "t_prefill": 0.0,
                         "t_decode": T, "t_post": 0.0, "T": T, "cut_pct": 100 * (1 - T / t0), "step_cut_pct": 0.0})
        return rows

    def save(self, c: Candidate, path: Path) -> None:
        self.saved.append(c.key)
        path.mkdir(parents=True, exist_ok=True)
        (path / "stub_model.json").write_text(json.dumps({"recipe": c.recipe}))


@pytest.fixture()
def stub() -> StubMeasurer:
    return StubMeasurer()
