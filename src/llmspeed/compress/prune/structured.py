"""Structured pruning that really shrinks the matrices: whole attention KV groups and MLP channels.

* `prune-heads-{pct}`: the unit is one KV group (one K/V head and the G = n_heads / n_kv_heads query heads
  that read it), so grouped-query attention stays consistent. Every layer loses the same number of groups,
  round(pct% · n_kv_heads), at least one group is kept. Importance of a group = Σ_j ‖X_j‖² · ‖W_o[:, j]‖²
  over its o_proj input channels j (X: calibration inputs of o_proj), i.e. the energy the group can write.
* `prune-mlp-{pct}`: every layer loses round(pct% · intermediate_size) SwiGLU channels; importance of channel
  j = ‖X_j‖ · ‖W_down[:, j]‖ (X: calibration inputs of down_proj = silu(gate)·up). Rows of gate/up and
  columns of down_proj are removed.

A channel or group whose output weights are all zero has importance 0 and is removed first, so removing it
leaves the model's outputs unchanged. Because every layer keeps the same sizes, the new shapes live in
`model.config` (n_heads / n_kv_heads / intermediate_size), which `LLM.save` writes to config.json: a saved
pruned model is rebuilt with the right shapes by the loader and `restore` has nothing left to do.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch
from torch import nn

from llmspeed.compress.api import StepReport, register_step

log = logging.getLogger(__name__)

_PCT = r"(?P<pct>\d+(?:\.\d+)?)"


@dataclass(frozen=True)
class StructuredConfig:
    target: str  # "heads" | "mlp"
    pct: float

    def __post_init__(self) -> None:
        if self.target not in ("heads", "mlp"):
            raise ValueError(f"structured pruning target must be heads or mlp, got {self.target!r}")
        if not 0.0 < float(self.pct) < 100.0:
            raise ValueError(f"pruning percentage must be in (0, 100), got {self.pct}")


def _n_remove(pct: float, units: int) -> int:
    return min(int(pct / 100.0 * units + 0.5), units - 1)  # round half up, keep at least one unit


def _layers(model: nn.Module, step: str) -> list[nn.Module]:
    cfg = getattr(model, "config", None)
    if cfg is None or cfg.arch != "llama":
        raise ValueError(f"{step} supports Llama-family models only (got arch {getattr(cfg, 'arch', '?')!r})")
    return list(model.model.layers)  # type: ignore[union-attr]


def _require_dense(mods: dict[str, nn.Module], step: str) -> None:
    bad = [n for n, m in mods.items() if type(m) is not nn.Linear]
    if bad:
        raise ValueError(f"{step} needs dense nn.Linear layers; {bad[0]} is {type(mods[bad[0]]).__name__}: put "
                         f"structured pruning before quantization / low-rank steps in the recipe")


def _slice_linear(lin: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    """A new Linear keeping output rows `rows` and input columns `cols` (index tensors)."""
    w = lin.weight.data  # [out, in]
    b = lin.bias.data if lin.bias is not None else None
    if rows is not None:
        w, b = w[rows], (b[rows] if b is not None else None)
    if cols is not None:
        w = w[:, cols]
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
    new.weight.data.copy_(w)
    if b is not None:
        new.bias.data.copy_(b)
    return new


def _keep(importance: torch.Tensor, n_remove: int) -> torch.Tensor:
    """Indices (sorted) of the units to keep: all but the n_remove least important (ties: lowest index goes)."""
    order = torch.argsort(importance, stable=True)
    return order[n_remove:].sort().values


def mlp_channel_importance(down: nn.Linear, x_norm: torch.Tensor) -> torch.Tensor:
    """[inter] ‖X_j‖ · ‖W_down[:, j]‖."""
    return x_norm.double() * down.weight.data.double().norm(dim=0)


def head_group_importance(o_proj: nn.Linear, x_sq: torch.Tensor, n_kv: int) -> torch.Tensor:
    """[n_kv]: Σ over each group's o_proj input channels of ‖X_j‖² · ‖W_o[:, j]‖²."""
    per_ch = x_sq.double() * o_proj.weight.data.double().pow(2).sum(0)  # [H*D]
    return per_ch.view(n_kv, -1).sum(-1)


def prune_mlp(model: nn.Module, pct: float, calib: object, step: str = "prune-mlp") -> StepReport:
    from llmspeed.compress.calibration import collect_activation_stats

    layers = _layers(model, step)
    inter = model.config.intermediate_size  # type: ignore[union-attr]
    r = _n_remove(pct, inter)
    rep = StepReport(step=step)
    if r == 0:
        rep.skipped["model.layers.*.mlp"] = f"{pct}% of {inter} channels rounds to 0"
        return rep
    names = {f"model.layers.{i}.mlp.{p}": getattr(lay.mlp, p) for i, lay in enumerate(layers)
             for p in ("gate_proj", "up_proj", "down_proj")}
    _require_dense(names, step)
    stats = collect_activation_stats(model, calib, [f"model.layers.{i}.mlp.down_proj" for i in range(len(layers))])  # type: ignore[arg-type]
    for i, layer in enumerate(layers):
        mlp = layer.mlp
        imp = mlp_channel_importance(mlp.down_proj, stats[f"model.layers.{i}.mlp.down_proj"].norm)  # [inter]
        keep = _keep(imp, r)  # [inter - r]
        mlp.gate_proj = _slice_linear(mlp.gate_proj, rows=keep)
        mlp.up_proj = _slice_linear(mlp.up_proj, rows=keep)
        mlp.down_proj = _slice_linear(mlp.down_proj, cols=keep)
        rep.changed += [f"model.layers.{i}.mlp.{p}" for p in ("gate_proj", "up_proj", "down_proj")]
    model.config = dataclasses.replace(model.config, intermediate_size=inter - r)  # type: ignore[union-attr]
    rep.notes.append(f"intermediate_size {inter} -> {inter - r} in all {len(layers)} layers "
                     f"({100.0 * r / inter:.1f}% of MLP channels removed)")
    return rep


def prune_heads(model: nn.Module, pct: float, calib: object, step: str = "prune-heads") -> StepReport:
    from llmspeed.compress.calibration import collect_activation_stats

    layers = _layers(model, step)
    cfg = model.config  # type: ignore[union-attr]
    H, Hkv, D = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    G = H // Hkv
    r = _n_remove(pct, Hkv)
    rep = StepReport(step=step)
    if r == 0:
        why = "only one KV group" if Hkv == 1 else f"{pct}% of {Hkv} KV groups rounds to 0"
        rep.skipped["model.layers.*.self_attn"] = why
        return rep
    names = {f"model.layers.{i}.self_attn.{p}": getattr(lay.self_attn, p) for i, lay in enumerate(layers)
             for p in ("q_proj", "k_proj", "v_proj", "o_proj")}
    _require_dense(names, step)
    stats = collect_activation_stats(model, calib, [f"model.layers.{i}.self_attn.o_proj" for i in range(len(layers))])  # type: ignore[arg-type]
    for i, layer in enumerate(layers):
        attn = layer.self_attn
        imp = head_group_importance(attn.o_proj, stats[f"model.layers.{i}.self_attn.o_proj"].sq_sum, Hkv)  # [Hkv]
        groups = _keep(imp, r)  # [Hkv - r] kept KV groups
        d = torch.arange(D)
        kv_rows = (groups.unsqueeze(1) * D + d).flatten()  # rows of k/v_proj of the kept groups
        q_heads = (groups.unsqueeze(1) * G + torch.arange(G)).flatten()  # kept query heads, group-major
        q_rows = (q_heads.unsqueeze(1) * D + d).flatten()
        attn.q_proj = _slice_linear(attn.q_proj, rows=q_rows)
        attn.k_proj = _slice_linear(attn.k_proj, rows=kv_rows)
        attn.v_proj = _slice_linear(attn.v_proj, rows=kv_rows)
        attn.o_proj = _slice_linear(attn.o_proj, cols=q_rows)
        attn.n_heads, attn.n_kv_heads = (Hkv - r) * G, Hkv - r
        rep.changed += [f"model.layers.{i}.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
    model.config = dataclasses.replace(cfg, n_heads=(Hkv - r) * G, n_kv_heads=Hkv - r, head_dim=D)  # type: ignore[union-attr]
    rep.notes.append(f"heads {H} -> {(Hkv - r) * G}, KV heads {Hkv} -> {Hkv - r} in all {len(layers)} layers "
                     f"(whole GQA groups of {G} query heads removed)")
    return rep


def restore_noop(model: nn.Module, cfg: StructuredConfig) -> None:
    """The saved config.json already carries the shrunken shapes: the loader builds them directly."""


@register_step(r"prune-heads-" + _PCT, form="prune-heads-{pct}", needs_calibration=True, structural=True,
               config=lambda pct: StructuredConfig("heads", float(pct)), restore=restore_noop)
def prune_heads_step(model: nn.Module, cfg: StructuredConfig, calib: object | None) -> StepReport:
    """Structured: remove whole KV groups (GQA-consistent) of every layer by calibrated importance."""
    return prune_heads(model, cfg.pct, calib, f"prune-heads-{cfg.pct:g}")


@register_step(r"prune-mlp-" + _PCT, form="prune-mlp-{pct}", needs_calibration=True, structural=True,
               config=lambda pct: StructuredConfig("mlp", float(pct)), restore=restore_noop)
def prune_mlp_step(model: nn.Module, cfg: StructuredConfig, calib: object | None) -> StepReport:
    """Structured: remove the least important SwiGLU channels of every layer (gate/up rows, down columns)."""
    return prune_mlp(model, cfg.pct, calib, f"prune-mlp-{cfg.pct:g}")
