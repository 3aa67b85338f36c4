"""Architecture-neutral model configuration, built from HF config.json or GGUF metadata."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SUPPORTED_ARCHS = ("llama", "gpt2")
_LLAMA_LIKE = {"llama": False, "mistral": False, "qwen2": True}  # model_type -> qkv bias


@dataclass(frozen=True)
class ModelConfig:
    arch: str  # "llama" (Llama/SmolLM/Mistral/Qwen2) or "gpt2"
    vocab_size: int
    hidden_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    intermediate_size: int
    max_position: int
    head_dim: int = 0  # 0 -> hidden_size // n_heads
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    qkv_bias: bool = False
    tie_embeddings: bool = True
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    model_type: str = "llama"  # original HF model_type, kept for export
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.arch not in SUPPORTED_ARCHS:
            raise ValueError(f"unsupported architecture {self.arch!r}; supported: {', '.join(SUPPORTED_ARCHS)}")
        for name in ("vocab_size", "hidden_size", "n_layers", "n_heads", "n_kv_heads", "intermediate_size",
                     "max_position"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"config field {name} must be positive, got {getattr(self, name)}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.head_dim == 0:
            if self.hidden_size % self.n_heads:
                raise ValueError("hidden_size must be divisible by n_heads")
            object.__setattr__(self, "head_dim", self.hidden_size // self.n_heads)
        object.__setattr__(self, "eos_token_ids", tuple(int(e) for e in self.eos_token_ids))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["eos_token_ids"] = list(self.eos_token_ids)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["eos_token_ids"] = tuple(kw.get("eos_token_ids", ()))
        return cls(**kw)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> ModelConfig:
        """Map a Hugging Face config.json dict onto ModelConfig."""
        mt = hf.get("model_type", "")
        eos = hf.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else ((eos,) if eos is not None else ())
        if mt in _LLAMA_LIKE:
            if hf.get("hidden_act", "silu") != "silu":
                raise ValueError(f"unsupported hidden_act {hf.get('hidden_act')!r} (only silu)")
            n_heads = hf["num_attention_heads"]
            return cls(
                arch="llama", model_type=mt, vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
                n_layers=hf["num_hidden_layers"], n_heads=n_heads,
                n_kv_heads=hf.get("num_key_value_heads") or n_heads,
                head_dim=hf.get("head_dim") or 0, intermediate_size=hf["intermediate_size"],
                max_position=hf.get("max_position_embeddings", 2048), norm_eps=hf.get("rms_norm_eps", 1e-6),
                rope_theta=float(_rope_theta(hf)), rope_scaling=_rope_scaling(hf),
                qkv_bias=bool(hf.get("attention_bias", _LLAMA_LIKE[mt])),
                tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
                bos_token_id=hf.get("bos_token_id"), eos_token_ids=eos_ids,
            )
        if mt == "gpt2":
            n_embd = hf["n_embd"]
            return cls(
                arch="gpt2", model_type=mt, vocab_size=hf["vocab_size"], hidden_size=n_embd,
                n_layers=hf["n_layer"], n_heads=hf["n_head"], n_kv_heads=hf["n_head"],
                intermediate_size=hf.get("n_inner") or 4 * n_embd, max_position=hf["n_positions"],
                norm_eps=hf.get("layer_norm_epsilon", 1e-5), qkv_bias=True, tie_embeddings=True,
                bos_token_id=hf.get("bos_token_id"), eos_token_ids=eos_ids,
            )
        raise ValueError(f"unsupported architecture model_type={mt!r}; supported: llama, mistral, qwen2, gpt2")

    def to_hf(self) -> dict[str, Any]:
        """Inverse of from_hf: a config.json transformers can read."""
        eos = list(self.eos_token_ids)
        eos_v: Any = eos[0] if len(eos) == 1 else (eos or None)
        if self.arch == "gpt2":
            return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": self.vocab_size,
                    "n_embd": self.hidden_size, "n_layer": self.n_layers, "n_head": self.n_heads,
                    "n_inner": self.intermediate_size, "n_positions": self.max_position,
                    "layer_norm_epsilon": self.norm_eps, "activation_function": "gelu_new",
                    "bos_token_id": self.bos_token_id, "eos_token_id": eos_v, "tie_word_embeddings": True}
        arch_name = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
        mt = self.model_type if self.model_type in arch_name else "llama"
        d: dict[str, Any] = {
            "model_type": mt, "architectures": [arch_name[mt]], "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size, "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads, "num_key_value_heads": self.n_kv_heads,
            "head_dim": self.head_dim, "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position, "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta, "hidden_act": "silu", "tie_word_embeddings": self.tie_embeddings,
            "bos_token_id": self.bos_token_id, "eos_token_id": eos_v, "torch_dtype": "float32",
        }
        if self.rope_scaling:
            d["rope_scaling"] = self.rope_scaling
        if mt == "llama":
            d["attention_bias"] = self.qkv_bias
        return d


def _rope_theta(hf: dict[str, Any]) -> float:
    rp = hf.get("rope_parameters") or {}
    return rp.get("rope_theta", hf.get("rope_theta", 10000.0))


def _rope_scaling(hf: dict[str, Any]) -> dict[str, Any] | None:
    rs = hf.get("rope_scaling") or hf.get("rope_parameters")
    if not rs:
        return None
    kind = rs.get("rope_type", rs.get("type", "default"))
    if kind == "default":
        return None
    if kind not in ("linear", "llama3"):
        raise ValueError(f"unsupported rope_scaling type {kind!r} (supported: linear, llama3)")
    return {k: v for k, v in rs.items() if k != "rope_theta"} | {"rope_type": kind}
