"""The student: which teacher layers it keeps (block influence, evenly spaced or listed), optional width pruning
first, and its construction from the teacher's own weights.

Block influence (ShortGPT, Men et al. 2024): BI_i = 1 − mean over tokens of cos(x_i, x_{i+1}), the cosine
similarity of block i's input and output hidden states on calibration text. A block that barely turns its input
(BI near 0) is the cheapest to drop; the student keeps the N blocks of highest influence, in teacher order.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmspeed.compress.calibration import Calibration, head_skipped, run_model
from llmspeed.layers.norm import RMSNorm
from llmspeed.models.config import ModelConfig
from llmspeed.models.registry import build_model, load_state

log = logging.getLogger(__name__)
_DENSE = (nn.Linear, nn.Embedding, nn.LayerNorm, RMSNorm)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's list of transformer blocks (Llama-family `model.layers`, GPT-2 `transformer.h`)."""
    arch = model.config.arch  # type: ignore[union-attr]
    if arch == "llama":
        return model.model.layers  # type: ignore[union-attr, return-value]
    if arch == "gpt2":
        return model.transformer.h  # type: ignore[union-attr, return-value]
    raise ValueError(f"distillation supports llama and gpt2 architectures, not {arch!r}")


@torch.no_grad()
def block_influence(model: nn.Module, windows: torch.Tensor, batch_size: int = 4) -> list[float]:
    """BI_i = 1 − mean_tokens cos(input of block i, output of block i) over `windows` ([n, T] int64)."""
    layers = decoder_layers(model)
    sums = torch.zeros(len(layers), dtype=torch.float64)
    count = [0]

    def hook(i: int) -> Callable[..., None]:
        def fn(_mod: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
            cos = F.cosine_similarity(args[0].float(), out.float(), dim=-1)  # [B, T]
            sums[i] += (1.0 - cos).double().sum()
            if i == 0:
                count[0] += cos.numel()
        return fn

    handles = [lay.register_forward_hook(hook(i)) for i, lay in enumerate(layers)]
    try:
        with head_skipped(model):  # the vocabulary projection is not needed: skip its cost
            for i in range(0, windows.shape[0], batch_size):
                run_model(model, windows[i: i + batch_size])  # [b, T]
    finally:
        for h in handles:
            h.remove()
    return (sums / max(count[0], 1)).tolist()


def choose_layers(n_teacher: int, n_keep: int | None, keep: str | tuple[int, ...],
                  influence: list[float] | None = None) -> list[int]:
    """Teacher layer indices the student keeps, ascending."""
    if isinstance(keep, tuple):
        bad = [i for i in keep if i >= n_teacher]
        if bad:
            raise ValueError(f"--keep lists layer {bad[0]}, but the teacher has layers 0..{n_teacher - 1}")
        if n_keep is not None and n_keep != len(keep):
            raise ValueError(f"--student-layers {n_keep} disagrees with the {len(keep)} layers --keep lists")
        if len(keep) >= n_teacher:
            raise ValueError(f"--keep lists all {n_teacher} teacher layers: the student would be the teacher")
        return list(keep)
    n = n_teacher if n_keep is None else n_keep
    if not 1 <= n <= n_teacher:
        raise ValueError(f"--student-layers must be between 1 and {n_teacher - 1} (the teacher has {n_teacher}), got {n}")
    if n == n_teacher:
        return list(range(n_teacher))
    if keep == "every-k":  # evenly spaced, first and last included: round(i · (L-1)/(N-1)) in integer math
        if n == 1:
            return [0]
        return [(2 * i * (n_teacher - 1) + (n - 1)) // (2 * (n - 1)) for i in range(n)]
    if keep != "influence":
        raise ValueError(f"unknown --keep mode {keep!r}")
    if influence is None or len(influence) != n_teacher:
        raise ValueError("block influence of every teacher layer is needed to choose layers by influence")
    order = sorted(range(n_teacher), key=lambda i: (-influence[i], i))  # most influential first; ties: lower index
    return sorted(order[:n])


def hidden_targets(kept: list[int], n_teacher: int) -> list[int]:
    """Teacher block whose output student block j should reproduce: the one just before the next kept block."""
    return [kept[j + 1] - 1 for j in range(len(kept) - 1)] + [n_teacher - 1]


def _own_tensors(m: nn.Module) -> list[str]:
    """Names of the module's own parameters and persistent buffers (RoPE tables are not persistent)."""
    return list(m._parameters) + [b for b in m._buffers if b not in m._non_persistent_buffers_set]


def dense_copy(model: nn.Module) -> nn.Module:
    """A float32 copy of a dense model with fresh parameters that require grad (the teacher is left untouched)."""
    bad = [n for n, m in model.named_modules() if type(m) not in _DENSE and _own_tensors(m)]
    if bad:
        raise ValueError(f"the teacher has compressed layers ({bad[0]} is {type(model.get_submodule(bad[0])).__name__}): "
                         "distil from the dense model and compress the student afterwards")
    cfg: ModelConfig = model.config  # type: ignore[assignment]
    state = {k: (v.detach().float() if v.is_floating_point() else v.detach()).clone() for k, v in model.state_dict().items()}
    return from_state(cfg, state)


def from_state(cfg: ModelConfig, state: dict[str, torch.Tensor]) -> nn.Module:
    """Build `cfg`'s module tree without random init and assign `state` (the model takes ownership of those
    tensors: training changes them in place); all parameters trainable."""
    with torch.device("meta"):
        model = build_model(cfg)
    load_state(model, state)
    for p in model.parameters():
        p.requires_grad_(True)
    return model.train()


@dataclass
class StudentPlan:
    """How the student was made from the teacher (recorded in the student's recipe.json)."""

    kept: list[int]
    n_teacher: int
    influence: list[float] | None = None
    prune_steps: list[str] = field(default_factory=list)
    prune_notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def build_student(teacher: nn.Module, n_keep: int | None, keep: str | tuple[int, ...], prune_steps: tuple[str, ...],
                  windows: torch.Tensor) -> tuple[nn.Module, StudentPlan]:
    """Width-prune a copy of the teacher (calibrated on `windows`), choose its layers, and return a fresh student."""
    from llmspeed.compress.api import STEPS

    n_teacher = len(decoder_layers(teacher))
    if n_keep is not None and not 1 <= n_keep < n_teacher:
        raise ValueError(f"--student-layers must be between 1 and {n_teacher - 1} (the teacher has {n_teacher}), "
                         f"got {n_keep}")
    model = dense_copy(teacher)
    notes: list[str] = []
    for step in prune_steps:
        spec, cfg = STEPS.parse(step)
        rep = spec.fn(model, cfg, Calibration(tokens=windows))
        notes.append(rep.summary())
        log.info("%s", rep.summary())
    influence = None
    if keep == "influence" and n_keep is not None:
        influence = block_influence(model, windows)
        log.info("block influence %s", " ".join(f"{i}:{b:.4f}" for i, b in enumerate(influence)))
    kept = choose_layers(n_teacher, n_keep, keep, influence)
    layers = decoder_layers(model)
    pruned = nn.ModuleList(layers[i] for i in kept)
    if model.config.arch == "llama":  # type: ignore[union-attr]
        model.model.layers = pruned  # type: ignore[union-attr]
    else:
        model.transformer.h = pruned  # type: ignore[union-attr]
    cfg = model.config.replace(n_layers=len(kept))  # type: ignore[union-attr]
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    student = from_state(cfg, state)
    return student, StudentPlan(kept=kept, n_teacher=n_teacher, influence=influence, prune_steps=list(prune_steps),
                                prune_notes=notes)


def spec_from_file(path: Path, teacher: ModelConfig) -> dict[str, Any]:
    """A `--student-config` JSON file -> DistillConfig fields (student_layers, keep, prune).

    Keys: `student_layers` (or HF `num_hidden_layers`), `keep` ("influence", "every-k" or a list of layer
    indices), `prune` (prune steps), and HF widths `intermediate_size` / `num_key_value_heads`, which become
    the prune-mlp / prune-heads percentage that removes exactly that many units.
    """
    from llmspeed.compress.prune.structured import _n_remove

    try:
        d = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"student config not found: {path}") from None
    except (ValueError, OSError) as e:
        raise ValueError(f"unreadable student config {path}: {e}") from None
    if not isinstance(d, dict):
        raise ValueError(f"student config {path} must be a JSON object")
    known = {"student_layers", "num_hidden_layers", "n_layers", "keep", "prune", "intermediate_size",
             "num_key_value_heads"}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"student config {path}: unknown keys {unknown}; known: {sorted(known)}")
    out: dict[str, Any] = {}
    layers = d.get("student_layers", d.get("num_hidden_layers", d.get("n_layers")))
    if layers is not None:
        out["student_layers"] = int(layers)
    if "keep" in d:
        k = d["keep"]
        out["keep"] = ",".join(str(int(i)) for i in k) if isinstance(k, list) else str(k)
    steps = [s for s in str(d.get("prune", "")).split(",") if s.strip()]
    for key, old, step in (("num_key_value_heads", teacher.n_kv_heads, "prune-heads"),
                           ("intermediate_size", teacher.intermediate_size, "prune-mlp")):
        if key not in d or int(d[key]) == old:
            continue
        new = int(d[key])
        if not 1 <= new < old:
            raise ValueError(f"student config {key} must be between 1 and {old}, got {new}")
        pct = f"{100.0 * (old - new) / old:.4f}".rstrip("0").rstrip(".")
        if old - _n_remove(float(pct), old) != new:
            raise ValueError(f"student config {key}={new} cannot be reached by percentage pruning of {old}")
        steps.append(f"{step}-{pct}")
    out["prune"] = ",".join(steps)
    return out
