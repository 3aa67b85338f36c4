"""Settings of a distillation run: what defines the run (`DistillConfig`) and what bounds one session (`SessionConfig`).

`DistillConfig` is everything that changes the math: the student's shape, the data, the loss and the optimiser.
A checkpoint stores it; `--resume` with a different one is refused (`differences`). `SessionConfig` only bounds
or reports one invocation (time budget, checkpoint cadence, workers) and may change between a run and its resume.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

KEEP_MODES = ("influence", "every-k")
PRECISIONS = ("auto", "fp32", "bf16")
_PRUNE_STEP = re.compile(r"prune-(heads|mlp)-\d+(\.\d+)?")


def parse_keep(keep: str) -> str | tuple[int, ...]:
    """`influence`, `every-k`, or an explicit comma-separated list of teacher layer indices (`0,1,5,9`)."""
    keep = keep.strip()
    if keep in KEEP_MODES:
        return keep
    try:
        idx = tuple(int(t) for t in keep.split(","))
    except ValueError:
        raise ValueError(f"--keep must be influence, every-k or a list of layer indices like 0,2,5; got {keep!r}") from None
    if len(set(idx)) != len(idx) or any(i < 0 for i in idx):
        raise ValueError(f"--keep layer indices must be distinct and >= 0, got {keep!r}")
    return tuple(sorted(idx))


@dataclass(frozen=True)
class DistillConfig:
    """What defines a run; equal configs + the same data and teacher give the same student, step for step."""

    teacher: str
    student_layers: int | None = None  # None: as many as the teacher (width pruning only) or len(keep list)
    keep: str = "influence"  # influence | every-k | "0,1,5,..."
    prune: str = ""  # width pruning first: comma-joined prune-heads-{pct} / prune-mlp-{pct} steps
    temperature: float = 1.0
    hidden_mse: float = 0.0  # weight of the hidden-state MSE term (0: logits-only KL)
    lr: float = 1e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 20
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    batch_size: int = 8  # global: sequences per optimiser step over all workers
    seq_len: int = 256
    seed: int = 0
    precision: str = "auto"  # auto: bf16 autocast only where measured faster, else fp32
    max_steps: int | None = None  # None: until the time budget (the schedule horizon is then estimated once)
    influence_windows: int = 32  # calibration windows for block influence and width pruning
    data: str = "default"  # default: calibration plays + pydoc topics; or a UTF-8 text file

    def __post_init__(self) -> None:
        if not self.teacher:
            raise ValueError("--teacher is required")
        if self.student_layers is not None and self.student_layers < 1:
            raise ValueError(f"--student-layers must be >= 1, got {self.student_layers}")
        parse_keep(self.keep)
        for step in filter(None, (s.strip() for s in self.prune.split(","))):
            if not _PRUNE_STEP.fullmatch(step):
                raise ValueError(f"--prune takes prune-heads-{{pct}} / prune-mlp-{{pct}} steps, got {step!r}")
        if not self.temperature > 0:
            raise ValueError(f"--temperature must be > 0, got {self.temperature}")
        if self.hidden_mse < 0:
            raise ValueError(f"--hidden-mse must be >= 0, got {self.hidden_mse}")
        if not self.lr > 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"--lr must be > 0 and min_lr_ratio in [0, 1], got {self.lr}, {self.min_lr_ratio}")
        if self.warmup_steps < 0 or self.weight_decay < 0 or not self.grad_clip > 0:
            raise ValueError("warm-up steps and weight decay must be >= 0, gradient clip > 0")
        if self.batch_size < 1 or self.seq_len < 2:
            raise ValueError(f"--batch-size must be >= 1 and --seq-len >= 2, got {self.batch_size}, {self.seq_len}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError(f"--max-steps must be >= 0, got {self.max_steps}")
        if not self.data:
            raise ValueError("--data must be 'default' or a text file")
        if self.influence_windows < 1:
            raise ValueError(f"influence windows must be >= 1, got {self.influence_windows}")

    @property
    def prune_steps(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.prune.split(",") if s.strip())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DistillConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def differences(self, other: dict[str, Any]) -> list[str]:
        """`name: theirs -> ours` for every field that differs from a stored config dict."""
        mine = self.to_dict()
        return [f"{k}: {other.get(k)!r} -> {mine[k]!r}" for k in mine if other.get(k) != mine[k]]


@dataclass(frozen=True)
class SessionConfig:
    """What bounds one invocation; may differ between a run and its `--resume`."""

    time_budget: float | None = None  # seconds of training in this session (None: no limit)
    checkpoint_every: int = 50  # steps
    keep_checkpoints: int = 1  # newest checkpoints kept on disk
    log_every_s: float = 10.0  # a progress line at least this often when stderr is not a terminal

    def __post_init__(self) -> None:
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(f"--time-budget must be > 0 seconds, got {self.time_budget}")
        if self.checkpoint_every < 1 or self.keep_checkpoints < 1:
            raise ValueError("--checkpoint-every and --keep-checkpoints must be >= 1")
        if not self.log_every_s > 0:
            raise ValueError("log interval must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SessionConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
