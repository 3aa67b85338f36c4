"""What the auto search returns (`AutoResult`), reports while it runs (`Progress`) and needs measured (`Measurer`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from llmspeed.auto.space import Candidate, ModelFacts


class Measurer(Protocol):
    """What the search needs measured; `measure.LLMMeasurer` is the real one."""

    def verdict(self) -> str | None: ...
    def machine(self) -> dict[str, Any]: ...
    def max_threads(self) -> int: ...
    def model_facts(self) -> ModelFacts: ...  # int4 groups that fit, MLP width (space.ModelFacts)
    def screen(self, cand: Candidate) -> dict[str, Any]: ...  # {"quality": {...}, "speed": {...}}
    def speed(self, cand: Candidate) -> dict[str, Any]: ...  # the screening speed run alone (a lossless draft)
    def confirm(self, cand: Candidate) -> dict[str, Any]: ...  # full-eval quality
    def benchmark(self, cands: list[Candidate]) -> list[dict[str, Any]]: ...  # full speed, same run
    def ablation(self, cand: Candidate) -> list[dict[str, Any]]: ...
    def save(self, cand: Candidate, path: Path) -> None: ...  # the candidate as an llmspeed saved directory


@dataclass
class AutoResult:
    objective: str
    criteria: str
    accepted: bool
    recipe: str | None  # the chosen recipe (None: nothing accepted)
    serving: dict[str, int] = field(default_factory=dict)
    draft: str | None = None  # the chosen speculative draft: a runtime option (`--draft`), not stored in the model
    chosen: dict[str, Any] | None = None  # its trial record (full eval + benchmark)
    best_over_budget: dict[str, Any] | None = None  # when nothing was accepted: the best candidate, not saved
    baseline: dict[str, Any] = field(default_factory=dict)  # the baseline's benchmark row (same run)
    baseline_name: str = "original"  # "server defaults" for throughput / ttft (the original as serve runs it)
    ratio: float | None = None  # chosen vs baseline on the objective's figure, same run (> 1: better)
    trials: list[dict[str, Any]] = field(default_factory=list)
    ablation: list[dict[str, Any]] = field(default_factory=list)
    verdict: str | None = None
    ppl_budget_pct: float | None = None
    message: str = ""
    out_dir: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class Progress:
    n: int
    total: int
    best: str
    left_s: float
    phase: str
