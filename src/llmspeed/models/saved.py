"""llmspeed's saved-model directory: model.safetensors + config.json + recipe.json + tokenizer files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from llmspeed.models.config import ModelConfig
from llmspeed.models.tokenizer import Tokenizer

SAVED_FORMAT = 1


def is_saved_dir(path: Path) -> bool:
    if not (path / "recipe.json").is_file() or not (path / "config.json").is_file():
        return False
    try:
        return "llmspeed" in json.loads((path / "config.json").read_text())
    except ValueError:
        return False


def write_saved_dir(out: Path, cfg: ModelConfig, state: dict[str, torch.Tensor], tok: Tokenizer,
                    recipe: list[str], source: dict[str, Any] | None = None) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    seen: dict[int, str] = {}
    for k, v in state.items():
        if cfg.tie_embeddings and k == "lm_head.weight":
            continue
        ptr = v.data_ptr()
        if ptr in seen and v.numel() > 0:  # other shared storage: keep one copy, note the alias
            continue
        seen[ptr] = k
        t = v.detach()
        shares_storage = t.untyped_storage().nbytes() != t.numel() * t.element_size()  # e.g. fused-projection views
        tensors[k] = t.clone() if shares_storage else t.contiguous()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt", "llmspeed": str(SAVED_FORMAT)})
    hf = cfg.to_hf()
    hf["llmspeed"] = {"format": SAVED_FORMAT, "config": cfg.to_dict(), "source": source or {}}
    (out / "config.json").write_text(json.dumps(hf, indent=2))
    (out / "recipe.json").write_text(json.dumps({"steps": list(recipe)}, indent=2))
    tok.save(out)


def read_saved_meta(path: Path) -> tuple[ModelConfig, list[str]]:
    """The config and recipe of a saved directory, without its weights."""
    meta = json.loads((path / "config.json").read_text())["llmspeed"]
    return ModelConfig.from_dict(meta["config"]), json.loads((path / "recipe.json").read_text()).get("steps", [])


def read_saved_dir(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor], Tokenizer, list[str]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = json.loads((path / "config.json").read_text())["llmspeed"]
    cfg = ModelConfig.from_dict(meta["config"])
    recipe = json.loads((path / "recipe.json").read_text()).get("steps", [])
    try:
        state = load_file(str(path / "model.safetensors"))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"unreadable weights {path / 'model.safetensors'}: {e}") from None
    tok = Tokenizer.from_dir(path, eos_token_ids=cfg.eos_token_ids, bos_token_id=cfg.bos_token_id)
    return cfg, state, tok, recipe
