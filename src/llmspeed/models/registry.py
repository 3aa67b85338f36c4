"""Architecture registry: arch name -> model class and HF state-dict adapter."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from llmspeed.models.config import ModelConfig
from llmspeed.models.gpt2 import GPT2LMHeadModel
from llmspeed.models.llama import LlamaForCausalLM

StateDict = dict[str, torch.Tensor]
_ARCHS: dict[str, type[nn.Module]] = {"llama": LlamaForCausalLM, "gpt2": GPT2LMHeadModel}


def _gpt2_from_hf(sd: StateDict) -> StateDict:
    """HF GPT-2 stores Conv1D weights as [in, out]; ours are nn.Linear [out, in]."""
    out: StateDict = {}
    for k, v in sd.items():
        if k.endswith(".attn.bias") or k.endswith(".attn.masked_bias"):
            continue  # causal-mask buffers, not weights
        key = k if k.startswith(("transformer.", "lm_head.")) else "transformer." + k
        if any(key.endswith(f"{m}.weight") for m in ("c_attn", "c_proj", "c_fc")) and v.dim() == 2:
            v = v.t().contiguous()
        out[key] = v
    return out


def _gpt2_to_hf(sd: StateDict) -> StateDict:
    return {k: (v.t().contiguous() if any(k.endswith(f"{m}.weight") for m in ("c_attn", "c_proj", "c_fc"))
                else v) for k, v in sd.items()}


def _identity(sd: StateDict) -> StateDict:
    return {k: v for k, v in sd.items() if not k.endswith("rotary_emb.inv_freq")}


FROM_HF: dict[str, Callable[[StateDict], StateDict]] = {"llama": _identity, "gpt2": _gpt2_from_hf}
TO_HF: dict[str, Callable[[StateDict], StateDict]] = {"llama": _identity, "gpt2": _gpt2_to_hf}


def build_model(cfg: ModelConfig) -> nn.Module:
    """An uninitialised (meta-free, random) model of the config's architecture."""
    try:
        cls = _ARCHS[cfg.arch]
    except KeyError:
        raise ValueError(f"unsupported architecture {cfg.arch!r}; supported: {', '.join(_ARCHS)}") from None
    return cls(cfg)


def load_state(model: nn.Module, sd: StateDict, strict: bool = True) -> None:
    """Load weights; a tied lm_head may be absent. Missing or unexpected tensors are a clear error."""
    cfg: ModelConfig = model.config  # type: ignore[assignment]
    if cfg.tie_embeddings:
        sd = {k: v for k, v in sd.items() if k != "lm_head.weight"}
    res = model.load_state_dict(sd, strict=False, assign=True)
    missing = [k for k in res.missing_keys if not (cfg.tie_embeddings and k == "lm_head.weight")]
    if strict and (missing or res.unexpected_keys):
        raise ValueError(f"weights do not match the {cfg.arch} architecture: missing {missing[:5]}, "
                         f"unexpected {res.unexpected_keys[:5]}")
    if cfg.tie_embeddings:
        model.tie_weights()  # type: ignore[operator]
