"""Unstructured and 2:4 semi-structured pruning: magnitude and Wanda.

* `prune-magnitude-{pct}`: zero the pct % smallest |W| of each Linear (the whole matrix is one comparison group).
* `prune-wanda-{pct}`: score S_ij = |W_ij| · ‖X_j‖₂ (X: the layer's inputs over the calibration tokens) and zero
  the pct % lowest scores WITHIN EACH OUTPUT ROW i (Wanda's per-output comparison group, Sun et al. 2023).
* `prune-2:4` / `prune-wanda-2:4`: in every group of 4 consecutive input weights of a row, zero the 2 with the
  lowest score (|W| resp. |W|·‖X‖); layers whose in_features is not a multiple of 4 are skipped.

Activations for Wanda come from one pass of the dense model over the calibration windows (not re-collected
layer by layer after pruning). Weights stay DENSE float tensors with zeros: on this AVX2 CPU there is no
sparse or 2:4 kernel, so these steps save no time and no memory by themselves (the zeros compress well and
compose with quantization); the report says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from llmspeed.compress.api import StepReport, iter_linears, register_step

log = logging.getLogger(__name__)

DENSE_NOTE = "weights stay dense on CPU (no sparse/2:4 kernel here): saves no time or memory by itself"
_PCT = r"(?P<pct>\d+(?:\.\d+)?)"


@dataclass(frozen=True)
class PruneConfig:
    method: str = "magnitude"  # "magnitude" | "wanda"
    pct: float = 50.0  # % of weights zeroed (unstructured); 50 for 2:4
    n_m: tuple[int, int] | None = None  # (2, 4): semi-structured N:M
    skip: tuple[str, ...] = ("lm_head",)

    def __post_init__(self) -> None:
        if self.method not in ("magnitude", "wanda"):
            raise ValueError(f"pruning method must be magnitude or wanda, got {self.method!r}")
        if not 0.0 < float(self.pct) < 100.0:
            raise ValueError(f"pruning percentage must be in (0, 100), got {self.pct}")
        if self.n_m is not None and self.n_m != (2, 4):
            raise ValueError(f"only 2:4 semi-structured sparsity is supported, got {self.n_m}")


def magnitude_mask(w: torch.Tensor, pct: float) -> torch.Tensor:
    """[out, in] -> bool keep-mask with exactly round(pct% · numel) zeros, smallest |W| first (whole matrix)."""
    k = round(pct / 100.0 * w.numel())
    keep = torch.ones(w.numel(), dtype=torch.bool)
    keep[torch.argsort(w.abs().flatten(), stable=True)[:k]] = False
    return keep.view_as(w)


def rowwise_mask(score: torch.Tensor, pct: float) -> torch.Tensor:
    """[out, in] scores -> keep-mask with exactly round(pct% · in) zeros in EVERY row (lowest scores)."""
    k = round(pct / 100.0 * score.shape[1])
    keep = torch.ones_like(score, dtype=torch.bool)
    idx = torch.argsort(score, dim=1, stable=True)[:, :k]  # [out, k]
    keep.scatter_(1, idx, False)
    return keep


def n_m_mask(score: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """[out, in] scores (in % m == 0) -> keep-mask zeroing the n lowest of every m consecutive inputs."""
    out_f, in_f = score.shape
    groups = score.reshape(out_f, in_f // m, m)  # [out, in/m, m]
    idx = torch.argsort(groups, dim=-1, stable=True)[..., :n]  # [out, in/m, n]
    keep = torch.ones_like(groups, dtype=torch.bool).scatter_(-1, idx, False)
    return keep.reshape(out_f, in_f)


def wanda_score(w: torch.Tensor, x_norm: torch.Tensor) -> torch.Tensor:
    """|W_ij| · ‖X_j‖₂: [out, in], [in] -> [out, in]."""
    return w.abs() * x_norm.to(w.dtype).unsqueeze(0)


def prune_model(model: nn.Module, cfg: PruneConfig, calib: object | None, step: str) -> StepReport:
    rep = StepReport(step=step)
    targets = [(n, m) for n, m in iter_linears(model, skip=cfg.skip)]
    if cfg.n_m is not None:
        for n, m in list(targets):
            if m.in_features % cfg.n_m[1]:
                rep.skipped[n] = f"in_features {m.in_features} is not a multiple of {cfg.n_m[1]}"
        targets = [(n, m) for n, m in targets if n not in rep.skipped]
    norms: dict[str, torch.Tensor] = {}
    if cfg.method == "wanda" and targets:
        from llmspeed.compress.calibration import collect_activation_stats

        if calib is None:
            raise ValueError(f"{step} needs calibration data")
        stats = collect_activation_stats(model, calib, [n for n, _ in targets])  # type: ignore[arg-type]
        norms = {n: s.norm for n, s in stats.items()}
    zeros = total = 0
    for name, lin in targets:
        w = lin.weight.data  # [out, in]
        score = wanda_score(w, norms[name]) if cfg.method == "wanda" else w.abs()
        if cfg.n_m is not None:
            keep = n_m_mask(score, *cfg.n_m)
        elif cfg.method == "wanda":
            keep = rowwise_mask(score, cfg.pct)
        else:
            keep = magnitude_mask(w, cfg.pct)
        w.mul_(keep.to(w.dtype))
        zeros += int((w == 0).sum())
        total += w.numel()
        rep.changed.append(name)
    if total:
        rep.notes.append(f"sparsity {100.0 * zeros / total:.2f}% over {len(rep.changed)} linears")
        rep.notes.append(DENSE_NOTE)
    return rep


def _cfg(method: str, pct: str) -> PruneConfig:
    return PruneConfig(method=method, pct=float(pct))


@register_step(r"prune-magnitude-" + _PCT, form="prune-magnitude-{pct}",
               config=lambda pct: _cfg("magnitude", pct), devices=("cpu", "cuda"))
def prune_magnitude_step(model: nn.Module, cfg: PruneConfig, calib: object | None) -> StepReport:
    """Unstructured magnitude pruning: zero the pct % smallest weights of each Linear."""
    return prune_model(model, cfg, None, f"prune-magnitude-{cfg.pct:g}")


@register_step(r"prune-wanda-" + _PCT, form="prune-wanda-{pct}", config=lambda pct: _cfg("wanda", pct),
               needs_calibration=True)
def prune_wanda_step(model: nn.Module, cfg: PruneConfig, calib: object | None) -> StepReport:
    """Unstructured Wanda pruning: |W|·‖X‖ per output row, from calibration activations."""
    return prune_model(model, cfg, calib, f"prune-wanda-{cfg.pct:g}")


@register_step(r"prune-2:4", form="prune-2:4", config=lambda: PruneConfig("magnitude", 50.0, (2, 4)),
               devices=("cpu", "cuda"))
def prune_24_step(model: nn.Module, cfg: PruneConfig, calib: object | None) -> StepReport:
    """2:4 semi-structured magnitude pruning (dense storage on CPU)."""
    return prune_model(model, cfg, None, "prune-2:4")


@register_step(r"prune-wanda-2:4", form="prune-wanda-2:4", config=lambda: PruneConfig("wanda", 50.0, (2, 4)),
               needs_calibration=True)
def prune_wanda_24_step(model: nn.Module, cfg: PruneConfig, calib: object | None) -> StepReport:
    """2:4 semi-structured Wanda pruning (dense storage on CPU)."""
    return prune_model(model, cfg, calib, "prune-wanda-2:4")
