"""Llama-family decoder (Llama, SmolLM, Mistral, Qwen2): GQA, RoPE, RMSNorm, SwiGLU, optional qkv bias.

Module names follow Hugging Face's so that a HF state dict loads without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmspeed.layers.attention import AttnBatch, attend
from llmspeed.layers.linear import FusedLinears
from llmspeed.layers.norm import RMSNorm
from llmspeed.layers.rope import RotaryEmbedding, apply_rope
from llmspeed.models.config import ModelConfig


class LlamaAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.scale = self.head_dim**-0.5
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.n_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.n_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.n_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.hidden_size, bias=False)
        self.fused: FusedLinears | None = None

    def fuse_projections(self) -> None:
        mods = [self.q_proj, self.k_proj, self.v_proj]
        if self.fused is not None and self.fused.valid(tuple(mods)):
            return
        self.fused = FusedLinears(mods) if FusedLinears.fusable(mods) else None  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], meta: AttnBatch,
                cache: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        B, T, _ = x.shape
        if self.fused is not None and self.fused.valid((self.q_proj, self.k_proj, self.v_proj)):
            q, k, v = self.fused(x)  # one GEMM for q, k and v
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.view(B, T, self.n_heads, self.head_dim)  # [B, T, H, D]
        k = k.view(B, T, self.n_kv_heads, self.head_dim)  # [B, T, Hkv, D]
        v = v.view(B, T, self.n_kv_heads, self.head_dim)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return self.o_proj(attend(q, k, v, meta, cache, self.scale))  # [B, T, C]


class LlamaMLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.fused: FusedLinears | None = None

    def fuse_projections(self) -> None:
        mods = [self.gate_proj, self.up_proj]
        if self.fused is not None and self.fused.valid(tuple(mods)):
            return
        self.fused = FusedLinears(mods) if FusedLinears.fusable(mods) else None  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, C] -> [B, T, C]
        if self.fused is not None and self.fused.valid((self.gate_proj, self.up_proj)):
            gate, up = self.fused(x)  # [B, T, I] each, from one GEMM
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(F.silu(gate) * up)


class LlamaBlock(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.self_attn = LlamaAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.mlp = LlamaMLP(cfg)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], meta: AttnBatch,
                cache: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), rope, meta, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaBackbone(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(LlamaBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = LlamaBackbone(cfg)
        with torch.device("cpu"):  # real tables even when the weights are built on the meta device
            self.rotary = RotaryEmbedding(cfg.head_dim, cfg.max_position, cfg.rope_theta, cfg.rope_scaling)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        """A tied lm_head shares the embedding's weight (after a load or a cast replaced either)."""
        if self.config.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(
        self,
        input_ids: torch.Tensor,  # [B, T]
        meta: AttnBatch,
        kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,  # per layer ([slots,Hkv,D], [slots,Hkv,D])
        logits_index: torch.Tensor | None = None,  # [B]: only return logits of this token per row
    ) -> torch.Tensor:  # [B, T, V] or [B, V]
        x = self.model.embed_tokens(input_ids)  # [B, T, C], in the model's compute dtype
        rope = self.rotary(meta.positions)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, rope, meta, kv[i] if kv is not None else None)
        if logits_index is not None:
            x = x[torch.arange(x.shape[0], device=x.device), logits_index].unsqueeze(1)  # [B, 1, C]
        logits = self.lm_head(self.model.norm(x)).float()
        return logits[:, 0] if logits_index is not None else logits
