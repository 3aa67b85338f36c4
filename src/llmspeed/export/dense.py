"""Dense float32 weights of a (possibly compressed) llmspeed model, under Hugging Face module names.

Quantized modules are dequantized, low-rank pairs are multiplied out, half-precision weights are upcast;
structurally pruned layers simply have their new (smaller) shapes, which the model's config already states.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)
StateDict = dict[str, torch.Tensor]


def _is_int8(mod: nn.Module) -> bool:
    return any(getattr(mod, b, None) is not None and getattr(mod, b).dtype == torch.int8
               for b in ("weight_int8", "qweight", "weight_q"))


def linear_weight(mod: nn.Module) -> torch.Tensor | None:
    """[out, in] float32 weight of any linear-like module, or None if `mod` is not one."""
    from llmspeed.layers.quant.lowrank import LowRankLinear

    if isinstance(mod, LowRankLinear):
        return (mod.up.weight.detach().double() @ mod.down.weight.detach().double()).float()
    if hasattr(mod, "dequantized_weight"):
        return mod.dequantized_weight().detach().float()  # type: ignore[operator]
    if isinstance(mod, nn.Linear) or (hasattr(mod, "in_features") and isinstance(getattr(mod, "weight", None),
                                                                                torch.Tensor)):
        return mod.weight.detach().float()  # type: ignore[union-attr]
    return None


def linear_bias(mod: nn.Module) -> torch.Tensor | None:
    from llmspeed.layers.quant.lowrank import LowRankLinear

    b = mod.up.bias if isinstance(mod, LowRankLinear) else getattr(mod, "bias", None)
    return b.detach().float() if isinstance(b, torch.Tensor) else None


def dense_state_dict(model: nn.Module) -> tuple[StateDict, set[str]]:
    """(HF-named float32 state dict in llmspeed's [out, in] layout, names of modules that are int8 in llmspeed)."""
    sd: StateDict = {}
    int8: set[str] = set()
    skip: tuple[str, ...] = ()
    for name, mod in model.named_modules():
        if skip and any(name.startswith(p + ".") for p in skip):
            continue
        w = linear_weight(mod)
        if w is not None and name:
            sd[f"{name}.weight"] = w.contiguous()
            b = linear_bias(mod)
            if b is not None:
                sd[f"{name}.bias"] = b.contiguous()
            if _is_int8(mod):
                int8.add(name)
            skip = (*skip, name)
            continue
        for pname, p in mod.named_parameters(recurse=False):
            if p is not None:
                sd[f"{name}.{pname}" if name else pname] = p.detach().float().contiguous()
    cfg = model.config  # type: ignore[attr-defined]
    emb = "model.embed_tokens.weight" if cfg.arch == "llama" else "transformer.wte.weight"
    if emb not in sd and "lm_head.weight" in sd:  # embedding served from a quantized tied head (int8-head)
        sd[emb] = sd["lm_head.weight"]
        if "lm_head" in int8:
            int8.add(emb.rsplit(".", 1)[0])
    if cfg.tie_embeddings:
        sd.pop("lm_head.weight", None)
    log.debug("dense export: %d tensors, %d int8 modules", len(sd), len(int8))
    return sd, int8
