"""Tensor-parallel shards: which slice of each weight a rank holds, the rank's model, and loading it slice by slice.

A rank never reads a whole weight: every sharded tensor comes from `safe_open(...).get_slice(name)[rows or
columns]`, so its peak memory is its shard (plus the replicated norms / GPT-2 positions). Layout (Megatron):
q/k/v (by attention heads and KV heads), gate/up and GPT-2's c_attn/c_fc are split by output rows;
o_proj/down_proj and GPT-2's c_proj by input columns (their bias is whole: it is added once after the
all-reduce); the embedding and lm_head by vocabulary rows (each shard ceil(V / world) rows, zero-padded).
The rank's model is the architecture's own module tree built from the *local* config (n_heads, n_kv_heads and
intermediate_size divided by the world size) with the row-parallel and vocabulary-parallel layers swapped in.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from llmspeed.layers.parallel import ParallelLMHead, RowParallelLinear, TPGroup, VocabParallelEmbedding, vocab_shard
from llmspeed.models.config import ModelConfig
from llmspeed.models.loading import Loaded, cast_floating, hf_config_and_tokenizer, parse_dtype
from llmspeed.models.registry import build_model, load_state
from llmspeed.models.saved import is_saved_dir, read_saved_meta
from llmspeed.models.spec import model_dir, parse_model_spec

ROW_PARALLEL = ("self_attn.o_proj", "mlp.down_proj", "attn.c_proj", "mlp.c_proj")
EMBEDDINGS = ("model.embed_tokens", "transformer.wte")
HF_CONV1D = ("c_attn.weight", "c_proj.weight", "c_fc.weight")  # stored [in, out] by HF GPT-2


@dataclass(frozen=True)
class Shard:
    """Which part of a full tensor (our [out, in] layout) a rank holds: `ranges` along `dim`, concatenated,
    then zero-padded to `pad_to` rows (vocabulary shards)."""

    dim: int
    ranges: tuple[tuple[int, int], ...]
    pad_to: int = 0


def check_tp(cfg: ModelConfig, world: int) -> None:
    """`--tp world` must divide the attention heads, the KV heads and the MLP width; a clear error otherwise."""
    if world < 1:
        raise ValueError(f"--tp must be >= 1, got {world}")
    for what, n in (("attention heads", cfg.n_heads), ("KV heads", cfg.n_kv_heads),
                    ("MLP intermediate size", cfg.intermediate_size)):
        if n % world:
            raise ValueError(f"--tp {world} does not divide the model's {n} {what}")


def local_config(cfg: ModelConfig, tp: TPGroup) -> ModelConfig:
    """This rank's config: heads, KV heads and MLP width divided by the world size (vocab and hidden unchanged)."""
    check_tp(cfg, tp.world)
    return cfg.replace(n_heads=cfg.n_heads // tp.world, n_kv_heads=cfg.n_kv_heads // tp.world,
                       intermediate_size=cfg.intermediate_size // tp.world, head_dim=cfg.head_dim,
                       extra={**cfg.extra, "tp": {"rank": tp.rank, "world": tp.world, "n_heads": cfg.n_heads,
                                                 "n_kv_heads": cfg.n_kv_heads,
                                                 "intermediate_size": cfg.intermediate_size}})


def shard_of(cfg: ModelConfig, key: str, tp: TPGroup) -> Shard | None:
    """The slice of weight `key` (our names, [out, in] layout) that rank `tp.rank` holds; None: replicated."""
    w, r = tp.world, tp.rank
    D = cfg.head_dim

    def rows(n: int, offset: int = 0) -> tuple[int, int]:  # this rank's part of n rows (or columns)
        return offset + r * n // w, offset + (r + 1) * n // w

    name = re.sub(r"\.\d+\.", ".N.", key)
    if key in ("model.embed_tokens.weight", "transformer.wte.weight", "lm_head.weight"):
        start, real, padded = vocab_shard(cfg.vocab_size, w, r)
        return Shard(0, ((start, start + real),), padded)
    if name.endswith(("self_attn.q_proj.weight", "self_attn.q_proj.bias")):
        return Shard(0, (rows(cfg.n_heads * D),))
    if name.endswith(("self_attn.k_proj.weight", "self_attn.k_proj.bias", "self_attn.v_proj.weight",
                      "self_attn.v_proj.bias")):
        return Shard(0, (rows(cfg.n_kv_heads * D),))
    if name.endswith(("mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.c_fc.weight", "mlp.c_fc.bias")):
        return Shard(0, (rows(cfg.intermediate_size),))
    if name.endswith(("self_attn.o_proj.weight", "attn.c_proj.weight")):
        return Shard(1, (rows(cfg.n_heads * D),))
    if name.endswith(("mlp.down_proj.weight", "mlp.c_proj.weight")):
        return Shard(1, (rows(cfg.intermediate_size),))
    if name.endswith(("attn.c_attn.weight", "attn.c_attn.bias")):  # [q; k; v] rows: this rank's part of each
        inner = cfg.n_heads * D
        return Shard(0, tuple(rows(inner, j * inner) for j in range(3)))
    return None  # norms, GPT-2 positions, row-parallel biases


def read_slice(sl: object, shard: Shard, transposed: bool) -> torch.Tensor:
    """Read only `shard`'s part of a safetensors slice (`transposed`: stored [in, out], HF GPT-2 Conv1D) into one
    tensor allocated once (each part is read straight from the file and copied into place)."""
    shape = list(sl.get_shape())  # type: ignore[attr-defined]
    dim = (1 - shard.dim) if transposed else shard.dim  # the dim to slice in the stored layout
    if len(shape) == 1:
        dim = 0
    if len(shard.ranges) == 1 and not transposed and not shard.pad_to:
        a, b = shard.ranges[0]
        return sl[a:b] if dim == 0 else sl[:, a:b]  # type: ignore[index]
    n = sum(b - a for a, b in shard.ranges)
    out_shape = list(shape)
    out_shape[dim] = n
    if transposed and len(shape) == 2:
        out_shape.reverse()  # our [out, in] layout
    if shard.pad_to:
        out_shape[0] = max(out_shape[0], shard.pad_to)
    out: torch.Tensor | None = None
    offset = 0
    for a, b in shard.ranges:
        part = sl[a:b] if dim == 0 else sl[:, a:b]  # type: ignore[index]
        if out is None:
            out = torch.zeros(out_shape, dtype=part.dtype)
        if transposed and part.dim() == 2:
            part = part.t()  # stored [in, out] -> our [out, in]
        out.narrow(shard.dim if out.dim() > 1 else 0, offset, b - a).copy_(part)
        offset += b - a
        del part
    assert out is not None
    return out


def hf_gpt2_key(k: str) -> str | None:
    if k.endswith((".attn.bias", ".attn.masked_bias")):
        return None  # causal-mask buffers, not weights
    return k if k.startswith(("transformer.", "lm_head.")) else "transformer." + k


def read_shard_state(files: list[Path], cfg: ModelConfig, tp: TPGroup, hf_names: bool) -> dict[str, torch.Tensor]:
    """This rank's tensors from safetensors files, each read slice by slice (`hf_names`: HF naming and layout)."""
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            for k in fh.keys():
                key: str | None = k
                if hf_names and cfg.arch == "gpt2":
                    key = hf_gpt2_key(k)
                if key is None or key.endswith("rotary_emb.inv_freq"):
                    continue
                if cfg.tie_embeddings and key == "lm_head.weight":
                    continue
                shard = shard_of(cfg, key, tp)
                transposed = hf_names and cfg.arch == "gpt2" and key.endswith(HF_CONV1D)
                if shard is None:
                    t = fh.get_tensor(k)
                    state[key] = t.t().contiguous() if transposed and t.dim() == 2 else t
                else:
                    state[key] = read_slice(fh.get_slice(k), shard, transposed)
    return state


def build_shard_model(cfg: ModelConfig, tp: TPGroup) -> nn.Module:
    """The rank's module tree on the meta device: the local config's model with the parallel layers swapped in."""
    lcfg = local_config(cfg, tp)
    with torch.device("meta"):
        model = build_model(lcfg)
        for name, mod in list(model.named_modules()):
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            if name.endswith(ROW_PARALLEL) and isinstance(mod, nn.Linear):
                new: nn.Module = RowParallelLinear(mod.in_features, mod.out_features, mod.bias is not None, tp)
            elif name in EMBEDDINGS:
                new = VocabParallelEmbedding(cfg.vocab_size, cfg.hidden_size, tp)
            elif name == "lm_head":
                new = ParallelLMHead(cfg.hidden_size, cfg.vocab_size, tp)
            else:
                continue
            setattr(parent, attr, new)
    model.tie_weights()  # type: ignore[operator]
    return model


def load_shard(spec: str | Path, dtype: str | torch.dtype, tp: TPGroup) -> Loaded:
    """Load rank `tp.rank`'s shard of a safetensors model (HF directory, or a float llmspeed-saved directory such as
    `default:fp32`'s conversion); the whole model is never read by one rank."""
    from llmspeed.models.tokenizer import Tokenizer

    tdtype = parse_dtype(dtype)
    ms = parse_model_spec(spec)
    path = model_dir(ms)
    if is_saved_dir(path):
        cfg, recipe = read_saved_meta(path)
        if recipe:
            hint = f" (try {ms.text.rpartition(':')[0] or ms.text}:fp32)" if ms.kind != "dir" else ""
            raise ValueError(f"--tp shards float weights; {ms.text} carries recipe {','.join(recipe)}, which cannot "
                             f"be sharded{hint}")
        tok = Tokenizer.from_dir(path, eos_token_ids=cfg.eos_token_ids, bos_token_id=cfg.bos_token_id)
        files, hf_names = [path / "model.safetensors"], False
    elif (path / "config.json").is_file():
        cfg, tok = hf_config_and_tokenizer(path)
        files, hf_names = sorted(path.glob("*.safetensors")), True
        if not files:
            raise FileNotFoundError(f"no *.safetensors weights in {path}")
    else:
        raise ValueError(f"{path} is not a model directory (no config.json)")
    check_tp(cfg, tp.world)
    model = build_shard_model(cfg, tp)
    load_state(model, read_shard_state(files, cfg, tp, hf_names))
    leftovers = [n for n, p in model.named_parameters() if p.is_meta]
    if leftovers:
        raise ValueError(f"weights missing for {leftovers[:5]}")
    if tdtype != torch.float32:
        cast_floating(model, tdtype)
    return Loaded(model=model.eval(), tokenizer=tok, config=cfg, recipe=[], source=ms.text)


def saved_config(path: Path) -> ModelConfig:
    """The full config of a model directory without reading weights (for `--tp` checks before spawning ranks)."""
    if is_saved_dir(path):
        return read_saved_meta(path)[0]
    return ModelConfig.from_hf(json.loads((path / "config.json").read_text()))
