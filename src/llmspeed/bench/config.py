"""Bench configuration and scenarios, validated up front so a bad request fails before any work is done."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BASELINES = ("hf", "llamacpp", "none")
DEFAULT_SCENARIOS = ("prefill512", "decode_b1", "decode_b8", "decode_b32")
_SCENARIO = re.compile(r"^(prefill(\d+)|decode_b(\d+))$")


@dataclass(frozen=True)
class Scenario:
    """`prefillN`: one request of N prompt tokens, one new token (TTFT); `decode_bB`: B requests of the
    bench prompt length, each generating exactly `new_tokens` (greedy, EOS ignored)."""

    name: str
    prompt_len: int
    batch: int
    new_tokens: int

    @property
    def kind(self) -> str:
        return "prefill" if self.name.startswith("prefill") else "decode"


def parse_scenario(name: str, prompt_len: int, new_tokens: int) -> Scenario:
    m = _SCENARIO.match(name.strip())
    if not m or int(m.group(2) or m.group(3)) <= 0:
        raise ValueError(f"unknown scenario {name!r}; use prefillN or decode_bB, e.g. {','.join(DEFAULT_SCENARIOS)}")
    if m.group(2):
        return Scenario(name, int(m.group(2)), 1, 1)
    return Scenario(name, prompt_len, int(m.group(3)), new_tokens)


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[str, ...] = ("default",)
    baselines: tuple[str, ...] = ("hf",)
    scenarios: tuple[str, ...] = DEFAULT_SCENARIOS
    repeats: int = 3
    warmup: int = 1
    prompt_len: int = 128
    new_tokens: int = 128
    threads: int | None = None
    tp: int = 1  # tensor-parallel ranks of llmspeed's rows (baselines run in one process)
    device: str = "cpu"  # llmspeed's rows (cpu | cuda | auto); the baselines run on the CPU
    out: str = "report"
    quality: bool = False
    quality_max_tokens: int = 4096  # tokens evaluated per model when --quality
    timeout_s: float = 3600.0  # per subprocess
    calibrate: bool = True  # measure bandwidth/FLOP/s if not cached (else use the cache or nothing)
    plots: bool = True
    draft: str | None = None  # speculative decoding on the llmspeed rows (runtime/spec/config.py)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("give at least one --model")
        if self.repeats <= 0:
            raise ValueError(f"--repeats must be > 0, got {self.repeats}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.prompt_len <= 0 or self.new_tokens <= 0:
            raise ValueError("prompt length and --new-tokens must be > 0")
        if self.threads is not None and self.threads <= 0:
            raise ValueError(f"--threads must be > 0, got {self.threads}")
        from llmspeed.runtime.device import resolve_device

        resolve_device(self.device)  # `cuda` without a GPU fails here, before any worker starts
        if self.tp < 1:
            raise ValueError(f"--tp must be >= 1, got {self.tp}")
        if self.timeout_s <= 0:
            raise ValueError("timeout must be > 0")
        bad = [b for b in self.baselines if b not in BASELINES]
        if bad:
            raise ValueError(f"unknown baseline {bad[0]!r}; choose from {', '.join(BASELINES)}")
        if not self.scenarios:
            raise ValueError("give at least one scenario")
        self.scenario_list()  # validates names
        from llmspeed.runtime.spec.config import parse_draft

        parse_draft(self.draft)
        check_writable(Path(self.out))

    def scenario_list(self) -> list[Scenario]:
        return [parse_scenario(s, self.prompt_len, self.new_tokens) for s in self.scenarios]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        return d


def check_writable(out: Path) -> None:
    """The report is written next to `out` and renamed into place: its parent must be a writable directory."""
    parent = out.expanduser().resolve().parent
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    if not parent.is_dir():
        raise ValueError(f"--out parent directory does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out is not writable: cannot create files in {parent}")
