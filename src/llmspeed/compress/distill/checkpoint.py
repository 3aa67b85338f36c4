"""Checkpoints of a distillation run and the final student directory, all written atomically.

A checkpoint is a directory `step-00000100/` holding `state.safetensors` (the student's parameters, AdamW's
`exp_avg` / `exp_avg_sq` / `step` per parameter, torch's RNG state) and `state.json` (the step, the schedule,
the run's `DistillConfig`, the data digest, the loss history). It is written to a temporary directory and renamed,
so a kill leaves either the whole checkpoint or none; `latest_checkpoint` ignores the temporaries.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmspeed.models.saved import write_saved_dir
from llmspeed.util.atomic import write_dir_atomically

log = logging.getLogger(__name__)
CKPT_FORMAT = 1
_NAME = re.compile(r"step-(\d{8})")
ADAM_KEYS = ("exp_avg", "exp_avg_sq", "step")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Complete checkpoint directories, oldest first (temporaries of an interrupted write are dot-named)."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.iterdir() if p.is_dir() and _NAME.fullmatch(p.name))


@dataclass
class Checkpoint:
    path: Path
    meta: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    def tensors(self) -> dict[str, torch.Tensor]:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(self.path / "state.safetensors"))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"corrupt checkpoint {self.path}: state.safetensors: {e}") from None


def read_checkpoint(path: Path) -> Checkpoint:
    """Parse `state.json` and the safetensors header; anything unreadable is one clear ValueError."""
    from safetensors import SafetensorError, safe_open

    try:
        meta = json.loads((path / "state.json").read_text())
        if not isinstance(meta, dict) or meta.get("format") != CKPT_FORMAT or not isinstance(meta.get("step"), int):
            raise ValueError("not a distillation checkpoint of this version")
        for key in ("config", "horizon", "warmup", "data_sha256", "losses", "param_names"):
            if key not in meta:
                raise ValueError(f"{key!r} is missing")
    except (OSError, ValueError) as e:
        raise ValueError(f"corrupt checkpoint {path}: state.json: {e}") from None
    try:
        with safe_open(str(path / "state.safetensors"), framework="pt") as f:
            keys = set(f.keys())
    except (SafetensorError, OSError) as e:
        raise ValueError(f"corrupt checkpoint {path}: state.safetensors: {e}") from None
    missing = [n for n in meta["param_names"] if f"param.{n}" not in keys]
    if missing:
        raise ValueError(f"corrupt checkpoint {path}: no tensor for parameter {missing[0]}")
    return Checkpoint(path, meta)


def latest_checkpoint(ckpt_dir: Path) -> Checkpoint | None:
    found = list_checkpoints(ckpt_dir)
    return read_checkpoint(found[-1]) if found else None


def _params(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return list(model.named_parameters())  # shared (tied) parameters appear once


def save_checkpoint(ckpt_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, meta: dict[str, Any],
                    keep: int = 1, extra: dict[str, bytes] | None = None) -> Path:
    """Write checkpoint `meta["step"]` atomically, then delete all but the newest `keep` checkpoints."""
    from safetensors.torch import save_file

    params = _params(model)
    tensors: dict[str, torch.Tensor] = {}
    for name, p in params:
        tensors[f"param.{name}"] = p.detach().contiguous()
        st = optimizer.state.get(p, {})
        for k in ADAM_KEYS:
            if k in st:
                tensors[f"adam.{name}.{k}"] = st[k].detach().reshape(()) if k == "step" else st[k].detach().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"format": CKPT_FORMAT, **meta, "param_names": [n for n, _ in params]}

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / "state.safetensors"), metadata={"llmspeed": "distill-checkpoint"})
        for name, blob in (extra or {}).items():
            (tmp / name).write_bytes(blob)
        (tmp / "state.json").write_text(json.dumps(meta, indent=1))

    path = write_dir_atomically(ckpt_dir / checkpoint_name(int(meta["step"])), write)
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def restore_checkpoint(ckpt: Checkpoint, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load parameters and AdamW state in place; shapes and names must match the student built for the run."""
    tensors = ckpt.tensors()
    params = _params(model)
    names = [n for n, _ in params]
    if names != list(ckpt.meta["param_names"]):
        raise ValueError(f"checkpoint {ckpt.path} was written for a different student (parameters differ)")
    with torch.no_grad():
        for name, p in params:
            t = tensors[f"param.{name}"]
            if t.shape != p.shape:
                raise ValueError(f"checkpoint {ckpt.path}: {name} has shape {tuple(t.shape)}, the student "
                                 f"{tuple(p.shape)}")
            p.copy_(t)
            st = {k: tensors[f"adam.{name}.{k}"].clone() for k in ADAM_KEYS if f"adam.{name}.{k}" in tensors}
            if st:
                if set(st) != set(ADAM_KEYS):
                    raise ValueError(f"corrupt checkpoint {ckpt.path}: incomplete optimizer state for {name}")
                st["step"] = st["step"].float().reshape(())
                optimizer.state[p] = st
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])


def save_student(out: Path, model: nn.Module, tokenizer: Any, recipe: list[str], source: dict[str, Any],
                 distill: dict[str, Any], extra: dict[str, bytes] | None = None) -> Path:
    """An ordinary llmspeed saved-model directory; recipe.json also records how the student was distilled."""

    def write(tmp: Path) -> None:
        state = {k: v.detach() for k, v in model.state_dict().items()}
        write_saved_dir(tmp, model.config, state, tokenizer, recipe, source=source)  # type: ignore[arg-type]
        rec = json.loads((tmp / "recipe.json").read_text())
        rec["distill"] = distill
        (tmp / "recipe.json").write_text(json.dumps(rec, indent=2))
        for name, blob in (extra or {}).items():
            (tmp / name).write_bytes(blob)

    return write_dir_atomically(out, write)
