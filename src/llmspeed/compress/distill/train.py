"""The distillation loop: KL(teacher ‖ student) at temperature T on the logits, optional hidden-state MSE,
AdamW with linear warm-up and cosine decay, gradient clipping, checkpoints, and data parallelism.

One loop serves one process, `torchrun` ranks and Ray Train workers: when torch.distributed is initialised,
every rank takes its contiguous share of the same global batch and the gradients are averaged with one
all-reduce before clipping and the optimiser step, so N ranks compute the same update as one process with the
whole batch (up to float summation order). Rank 0 decides when to stop, writes checkpoints and reports.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from llmspeed.compress.distill.checkpoint import Checkpoint, restore_checkpoint, save_checkpoint
from llmspeed.compress.distill.config import DistillConfig, SessionConfig
from llmspeed.compress.distill.data import DistillData, batch_indices, rank_rows
from llmspeed.compress.distill.report import Progress
from llmspeed.compress.distill.student import decoder_layers, hidden_targets
from llmspeed.layers.attention import AttnBatch

log = logging.getLogger(__name__)
PROBE_STEPS = 3  # steps timed before a time budget fixes the schedule's horizon
BETAS = (0.9, 0.95)


def lr_at(step: int, peak: float, min_ratio: float, warmup: int, horizon: int | None) -> float:
    """Learning rate of step `step` (1-based): linear warm-up to `peak`, then cosine down to peak·min_ratio."""
    if warmup and step <= warmup:
        return peak * step / warmup
    if horizon is None or horizon <= warmup:
        return peak
    frac = min(1.0, (step - warmup) / max(1, horizon - warmup))
    return peak * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac)))


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · mean over tokens of KL(softmax(t/T) ‖ softmax(s/T)); logits [..., V]."""
    V = student_logits.shape[-1]
    ls = F.log_softmax(student_logits.float().reshape(-1, V) / temperature, dim=-1)  # [N, V]
    lt = F.log_softmax(teacher_logits.float().reshape(-1, V) / temperature, dim=-1)  # [N, V]
    return F.kl_div(ls, lt, log_target=True, reduction="batchmean") * temperature**2


def hidden_mse(student_h: list[torch.Tensor], teacher_h: list[torch.Tensor]) -> torch.Tensor:
    """Mean over blocks of ‖h_s − h_t‖² / ‖h_t‖² (scale-free: residual streams grow with depth)."""
    terms = [(s.float() - t.float()).pow(2).mean() / t.float().pow(2).mean().clamp_min(1e-12)
             for s, t in zip(student_h, teacher_h, strict=True)]
    return torch.stack(terms).mean()


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @staticmethod
    def current() -> Ranks:
        if dist.is_available() and dist.is_initialized():
            return Ranks(dist.get_rank(), dist.get_world_size())
        return Ranks()

    def average_grads(self, params: list[nn.Parameter]) -> None:
        """One all-reduce of all gradients, divided by the world size (what DDP computes, without its hooks)."""
        if self.world == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset: offset + g.numel()].view_as(g))
            offset += g.numel()

    def from_rank0(self, values: list[float]) -> list[float]:
        """Rank 0's values on every rank (stop flags, the horizon)."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.broadcast(t, src=0)
        return t.tolist()

    def mean(self, x: float) -> float:
        if self.world == 1:
            return x
        t = torch.tensor([x], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item()) / self.world


@dataclass
class TrainResult:
    step: int
    horizon: int | None
    losses: list[tuple[int, float]] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    stopped: str = "horizon"  # horizon | time_budget

    @property
    def final_loss(self) -> float | None:
        """Mean loss of the last 10 steps (one step's batch is too noisy to describe a student)."""
        if not self.losses:
            return None
        tail = [v for _, v in self.losses[-10:]]
        return sum(tail) / len(tail)


class _Capture:
    """Forward hooks that keep the output of chosen blocks during one forward pass."""

    def __init__(self, layers: nn.ModuleList, which: list[int]) -> None:
        self.out: dict[int, torch.Tensor] = {}
        self.handles = [layers[i].register_forward_hook(self._hook(i)) for i in sorted(set(which))]

    def _hook(self, i: int) -> Callable[..., None]:
        def fn(_m: nn.Module, _args: Any, out: torch.Tensor) -> None:
            self.out[i] = out
        return fn

    def take(self, which: list[int]) -> list[torch.Tensor]:
        got = [self.out[i] for i in which]
        self.out = {}
        return got


def _forward(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    B, T = ids.shape
    return model(ids, AttnBatch.no_cache(B, T))  # [B, T, V] float32


def train(student: nn.Module, teacher: nn.Module, data: DistillData, cfg: DistillConfig, session: SessionConfig, *,
          ckpt_dir: Path | None, kept: list[int], precision: str = "fp32", resume: Checkpoint | None = None,
          on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train `student` towards `teacher` until the horizon or this session's time budget; returns the history."""
    ranks = Ranks.current()
    if cfg.batch_size % ranks.world:
        raise ValueError(f"--batch-size {cfg.batch_size} must be a multiple of the {ranks.world} workers")
    teacher.eval().requires_grad_(False)
    student.train()
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=BETAS, eps=1e-8, weight_decay=cfg.weight_decay)
    n_teacher = len(decoder_layers(teacher))
    if resume is not None:
        restore_checkpoint(resume, student, opt)
        m = resume.meta
        res = TrainResult(step=resume.step, horizon=m["horizon"], losses=[(int(s), float(v)) for s, v in m["losses"]],
                          tokens=int(m.get("tokens", 0)), seconds=float(m.get("train_seconds", 0.0)))
        warmup = int(m["warmup"])
    else:
        res = TrainResult(step=0, horizon=cfg.max_steps if session.time_budget is None else None)
        if res.horizon is None and cfg.max_steps == 0:
            res.horizon = 0
        warmup = min(cfg.warmup_steps, max(1, res.horizon // 10)) if res.horizon else cfg.warmup_steps
    if res.horizon is None and cfg.max_steps is None and session.time_budget is None:
        raise ValueError("give --max-steps or --time-budget")
    horizon_fixed = res.horizon is not None and (resume is not None or session.time_budget is None)
    targets = hidden_targets(kept, n_teacher)
    cap_s = _Capture(decoder_layers(student), list(range(len(kept)))) if cfg.hidden_mse > 0 else None
    cap_t = _Capture(decoder_layers(teacher), targets) if cfg.hidden_mse > 0 else None
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
    bar = Progress(res.step, res.horizon, session.log_every_s, enabled=ranks.rank == 0)
    t_start = time.monotonic()
    step_times: list[float] = []
    tokens_per_step = cfg.batch_size * data.seq_len
    budget = session.time_budget
    digest = data.digest
    try:
        while True:
            out_of_time = budget is not None and time.monotonic() - t_start >= budget
            done = res.horizon is not None and res.step >= res.horizon
            if ranks.from_rank0([float(out_of_time or done)])[0]:
                res.stopped = "time_budget" if out_of_time and not done else "horizon"
                break
            t0 = time.monotonic()
            step = res.step + 1
            rows = rank_rows(batch_indices(data.n, cfg.batch_size, cfg.seed, step), ranks.rank, ranks.world)
            ids = data.tokens[rows]  # [b, T] this rank's share
            with torch.no_grad(), autocast():
                t_logits = _forward(teacher, ids)  # [b, T, V]
            with autocast():
                s_logits = _forward(student, ids)  # [b, T, V]
            loss = kd_loss(s_logits, t_logits, cfg.temperature)
            if cap_s is not None and cap_t is not None:
                loss = loss + cfg.hidden_mse * hidden_mse(cap_s.take(list(range(len(kept)))), cap_t.take(targets))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            del s_logits, t_logits
            ranks.average_grads(params)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            lr = lr_at(step, cfg.lr, cfg.min_lr_ratio, warmup, res.horizon)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.step()
            value = ranks.mean(float(loss.detach()))
            res.step, res.tokens = step, res.tokens + tokens_per_step
            res.losses.append((step, value))
            dt = time.monotonic() - t0
            res.seconds += dt
            step_times.append(dt)
            if not horizon_fixed and (len(step_times) >= PROBE_STEPS or step % session.checkpoint_every == 0):
                res.horizon, horizon_fixed = _fix_horizon(res, cfg, budget, time.monotonic() - t_start, step_times,
                                                          ranks), True
                warmup = min(warmup, max(1, res.horizon // 10))  # as for a horizon known from the start
                bar.set_total(res.horizon)
            bar.update(step, value, tokens_per_step / dt, lr)
            if ranks.rank == 0 and ckpt_dir is not None and step % session.checkpoint_every == 0 \
                    and step != res.horizon:
                _checkpoint(ckpt_dir, student, opt, res, warmup, cfg, digest, kept, precision, ranks, session)
            if on_step is not None:
                on_step(step, value)
    finally:
        bar.close()
        for cap in (cap_s, cap_t):
            if cap is not None:
                for h in cap.handles:
                    h.remove()
    if res.horizon is None:  # the budget ended before the step time was measured: the run ends here
        res.horizon = res.step
    if ranks.rank == 0 and ckpt_dir is not None and res.step > 0 and not _written(ckpt_dir, res.step):
        _checkpoint(ckpt_dir, student, opt, res, warmup, cfg, digest, kept, precision, ranks, session)
    student.eval()
    return res


def _fix_horizon(res: TrainResult, cfg: DistillConfig, budget: float | None, elapsed: float, times: list[float],
                 ranks: Ranks) -> int:
    """With a time budget: the steps that fit, from the measured step time (first step excluded when possible)."""
    per_step = sorted(times[1:] or times)[len(times[1:] or times) // 2]  # median
    fit = res.step + int(max(0.0, (budget or 0.0) - elapsed) / max(per_step, 1e-9))
    horizon = min(fit, cfg.max_steps) if cfg.max_steps is not None else fit
    horizon = int(ranks.from_rank0([float(max(horizon, res.step))])[0])
    if ranks.rank == 0:
        log.info("%.2f s/step: the schedule's horizon is step %d (time budget %.0f s)", per_step, horizon,
                 budget or 0.0)
    return horizon


def _written(ckpt_dir: Path, step: int) -> bool:
    from llmspeed.compress.distill.checkpoint import checkpoint_name

    return (ckpt_dir / checkpoint_name(step) / "state.json").is_file()


def _checkpoint(ckpt_dir: Path, student: nn.Module, opt: torch.optim.Optimizer, res: TrainResult, warmup: int,
                cfg: DistillConfig, digest: str, kept: list[int], precision: str, ranks: Ranks,
                session: SessionConfig) -> None:
    meta = {"step": res.step, "horizon": res.horizon, "warmup": warmup, "config": cfg.to_dict(),
            "data_sha256": digest, "losses": res.losses, "tokens": res.tokens, "train_seconds": res.seconds,
            "precision": precision, "kept": kept, "world_size": ranks.world}
    save_checkpoint(ckpt_dir, student, opt, meta, keep=session.keep_checkpoints)  # the losses are in state.json
