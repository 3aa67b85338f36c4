"""Resolve a `--model` value (default | HF dir | .gguf | llmspeed dir) into (model, tokenizer, recipe)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from llmspeed.models.config import ModelConfig
from llmspeed.models.registry import FROM_HF, build_model, load_state
from llmspeed.models.saved import is_saved_dir, read_saved_dir
from llmspeed.models.spec import model_dir, parse_model_spec
from llmspeed.models.tokenizer import Tokenizer

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


@dataclass
class Loaded:
    model: nn.Module
    tokenizer: Tokenizer
    config: ModelConfig
    recipe: list[str] = field(default_factory=list)
    source: str = ""


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}") from None


# (model on the meta device, recipe steps) -> rebuild the structure those steps produced; llm.py hands in
# compress's `restore_structure`, so models import nothing from compress
Restore = Callable[[nn.Module, list[str]], None]


def instantiate(cfg: ModelConfig, state: dict[str, torch.Tensor], recipe: list[str] | None = None,
                restore: Restore | None = None) -> nn.Module:
    """Build the module tree without random init (meta device), rebuild the recipe's structure, assign the tensors."""
    with torch.device("meta"):
        model = build_model(cfg)
    if recipe:
        if restore is None:
            raise ValueError(f"a model saved with recipe {','.join(recipe)} needs a restore function to load")
        restore(model, recipe)
    load_state(model, state)
    leftovers = [n for n, p in model.named_parameters() if p.is_meta] + [n for n, b in model.named_buffers() if b.is_meta]
    if leftovers:
        raise ValueError(f"weights missing for {leftovers[:5]}")
    return model.eval()


def hf_config_and_tokenizer(path: Path) -> tuple[ModelConfig, Tokenizer]:
    """A Hugging Face directory's config (eos from generation_config.json) and tokenizer, without its weights."""
    try:
        hf = json.loads((path / "config.json").read_text())
    except ValueError as e:
        raise ValueError(f"unreadable {path / 'config.json'}: {e}") from None
    cfg = ModelConfig.from_hf(hf)
    gen = path / "generation_config.json"
    if gen.is_file():
        eos = json.loads(gen.read_text()).get("eos_token_id")
        if eos is not None:
            cfg = cfg.replace(eos_token_ids=tuple(eos) if isinstance(eos, list) else (eos,))
    tok = Tokenizer.from_dir(path, eos_token_ids=cfg.eos_token_ids, bos_token_id=cfg.bos_token_id)
    if not tok.eos_token_ids and cfg.eos_token_ids:
        tok.eos_token_ids = cfg.eos_token_ids
    return cfg, tok


def _read_hf_dir(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor], Tokenizer]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    cfg, tok = hf_config_and_tokenizer(path)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {path} (pickled .bin checkpoints are not loaded)")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            state.update(load_file(str(f)))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"unreadable weights {f}: {e}") from None
    return cfg, FROM_HF[cfg.arch](state), tok


def load_model(spec: str | Path = "default", dtype: str | torch.dtype = "float32",
               restore: Restore | None = None) -> Loaded:
    """Load a `--model` value (models/spec.py says what each means). `restore(model, steps)` rebuilds a saved
    recipe's module structure (see `instantiate`)."""
    tdtype = parse_dtype(dtype)
    ms = parse_model_spec(spec)
    path = model_dir(ms)
    source = "default" if ms.text == "default" else ms.text
    if is_saved_dir(path):
        cfg, state, tok, recipe = read_saved_dir(path)
    elif (path / "config.json").is_file():
        cfg, state, tok = _read_hf_dir(path)
        recipe = []
    else:
        raise ValueError(f"{path} is not a model directory (no config.json)")
    model = instantiate(cfg, state, recipe, restore)
    if tdtype != torch.float32:
        cast_floating(model, tdtype)
    return Loaded(model=model, tokenizer=tok, config=cfg, recipe=recipe, source=source)


def cast_floating(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast matmul weights and embeddings; norms keep float32 (they compute in float32 anyway)."""
    from llmspeed.layers.norm import RMSNorm

    for mod in model.modules():
        if isinstance(mod, (RMSNorm, nn.LayerNorm)):
            continue
        for name, p in list(mod.named_parameters(recurse=False)):
            if p.is_floating_point():
                setattr(mod, name, nn.Parameter(p.detach().to(dtype), requires_grad=False))
    if model.config.tie_embeddings:  # type: ignore[union-attr]
        model.tie_weights()  # type: ignore[operator]
