"""Low-rank factorization by truncated SVD: `svd-r{rank}` and `svd-e{energy}`.

W [out, in] = U S Vᵀ; keeping the top r singular values gives W ≈ (U_r √S_r)(√S_r V_rᵀ), i.e. two thinner
Linears `down` [r, in] and `up` [out, r] (bias stays on `up`). `svd-r{rank}` uses r = rank for every layer;
`svd-e{energy}` uses, per layer, the MINIMAL r with Σ_{i<r} s_i² ≥ energy · Σ s_i² (spectral energy).

A layer is replaced ONLY where it cuts FLOPs: r·(in + out) < in·out; every other layer is left alone with the
reason in the report. The chosen rank of every replaced layer is reported and stored in
`model.config.extra["lowrank"]` ({module name: rank}), which `restore` reads to rebuild the two-Linear
structure of a saved model before its tensors are assigned.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch
from torch import nn

from llmspeed.compress.api import StepReport, iter_linears, register_step, set_module
from llmspeed.layers.quant.lowrank import LowRankLinear

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LowRankConfig:
    rank: int | None = None  # svd-r{rank}
    energy: float | None = None  # svd-e{energy}, 0 < energy <= 1
    skip: tuple[str, ...] = ("lm_head",)

    def __post_init__(self) -> None:
        if (self.rank is None) == (self.energy is None):
            raise ValueError("give exactly one of rank or energy")
        if self.rank is not None and self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if self.energy is not None and not 0.0 < self.energy <= 1.0:
            raise ValueError(f"energy must be in (0, 1], got {self.energy}")

    @property
    def name(self) -> str:
        return f"svd-r{self.rank}" if self.rank is not None else f"svd-e{self.energy:g}"


def energy_rank(s: torch.Tensor, energy: float) -> int:
    """Minimal r with Σ_{i<r} s_i² >= energy · Σ s_i² (s sorted descending)."""
    e = s.double().pow(2)
    cum = e.cumsum(0) / e.sum()  # [k], non-decreasing, last = 1
    target = torch.tensor(energy, dtype=torch.float64) - 1e-12  # tolerate float rounding at energy = 1
    return int(torch.searchsorted(cum, target).item()) + 1


def cuts_flops(rank: int, in_f: int, out_f: int) -> bool:
    return rank * (in_f + out_f) < in_f * out_f


def choose_rank(lin: nn.Linear, cfg: LowRankConfig) -> int:
    if cfg.rank is not None:
        return min(cfg.rank, lin.in_features, lin.out_features)
    s = torch.linalg.svdvals(lin.weight.data.double())  # [min(in, out)]
    return energy_rank(s, float(cfg.energy))  # type: ignore[arg-type]


def svd_step_impl(model: nn.Module, cfg: LowRankConfig) -> StepReport:
    rep = StepReport(step=cfg.name)
    ranks: dict[str, int] = {}
    for name, lin in iter_linears(model, skip=cfg.skip):
        r = choose_rank(lin, cfg)  # type: ignore[arg-type]
        in_f, out_f = lin.in_features, lin.out_features
        if not cuts_flops(r, in_f, out_f):
            rep.skipped[name] = (f"rank {r} would not cut FLOPs: r·(in+out) = {r * (in_f + out_f)} >= in·out = "
                                 f"{in_f * out_f} (break-even rank {in_f * out_f // (in_f + out_f)})")
            continue
        set_module(model, name, LowRankLinear.from_linear(lin, r))  # type: ignore[arg-type]
        ranks[name] = r
        rep.changed.append(name)
        log.info("%s: %s [%d x %d] -> rank %d", cfg.name, name, out_f, in_f, r)
    total = len(ranks) + len(rep.skipped)
    rep.notes.append(f"{len(ranks)} of {total} linears factorized")
    if ranks:
        rep.notes.append("ranks: " + ", ".join(f"{n.removeprefix('model.')}={r}" for n, r in ranks.items()))
        mc = model.config  # type: ignore[union-attr]
        merged = {**mc.extra.get("lowrank", {}), **ranks}
        model.config = dataclasses.replace(mc, extra={**mc.extra, "lowrank": merged})  # type: ignore[union-attr]
    else:
        ex = next(iter(rep.skipped.values()), "no eligible linear layers")
        msg = f"{cfg.name} changed NOTHING: no layer gets cheaper at the chosen rank (e.g. {ex})"
        log.warning(msg)
        rep.notes.append(msg)
    return rep


def restore_lowrank(model: nn.Module, cfg: LowRankConfig) -> None:
    """Rebuild LowRankLinear modules (shapes only, meta device) from `model.config.extra["lowrank"]`."""
    ranks: dict[str, int] = model.config.extra.get("lowrank", {})  # type: ignore[union-attr]
    for name in sorted(ranks, key=lambda n: n.count(".")):  # parents before factorized children
        mod = model.get_submodule(name)
        if isinstance(mod, LowRankLinear):
            continue  # restored by an earlier svd step of the same recipe
        if not isinstance(mod, nn.Linear):
            raise ValueError(f"cannot restore low-rank layer {name}: found {type(mod).__name__}")
        w = mod.weight
        new = LowRankLinear(mod.in_features, mod.out_features, int(ranks[name]), bias=mod.bias is not None,
                            device=w.device, dtype=w.dtype)
        set_module(model, name, new)


def _rank_cfg(rank: str) -> LowRankConfig:
    return LowRankConfig(rank=int(rank))


def _energy_cfg(energy: str) -> LowRankConfig:
    return LowRankConfig(energy=float(energy))


@register_step(r"svd-r(?P<rank>\d+)", form="svd-r{rank}", config=_rank_cfg, structural=True,
               restore=restore_lowrank, devices=("cpu", "cuda"))
def svd_rank_step(model: nn.Module, cfg: LowRankConfig, calib: object | None) -> StepReport:
    """Truncated SVD at a fixed rank, only where it cuts FLOPs."""
    return svd_step_impl(model, cfg)


@register_step(r"svd-e(?P<energy>\d*\.?\d+)", form="svd-e{energy}", config=_energy_cfg, structural=True,
               restore=restore_lowrank, devices=("cpu", "cuda"))
def svd_energy_step(model: nn.Module, cfg: LowRankConfig, calib: object | None) -> StepReport:
    """Truncated SVD keeping the given fraction of spectral energy per layer, only where it cuts FLOPs."""
    return svd_step_impl(model, cfg)
