"""GPT-2: learned positions, LayerNorm, fused qkv projection, GELU (tanh) MLP, tied lm_head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmspeed.layers.attention import AttnBatch, attend
from llmspeed.models.config import ModelConfig


class GPT2Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.scale = self.head_dim**-0.5
        inner = cfg.n_heads * cfg.head_dim  # hidden_size, or this rank's heads under tensor parallelism
        self.c_attn = nn.Linear(cfg.hidden_size, 3 * inner)
        self.c_proj = nn.Linear(inner, cfg.hidden_size)

    def forward(self, x: torch.Tensor, meta: AttnBatch, cache: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.c_attn(x).split(self.n_heads * self.head_dim, dim=-1)  # 3 x [B, T, H*D]
        shape = (B, T, self.n_heads, self.head_dim)
        return self.c_proj(attend(q.view(shape), k.view(shape), v.view(shape), meta, cache, self.scale))


class GPT2MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.c_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class GPT2Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.attn = GPT2Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.mlp = GPT2MLP(cfg)

    def forward(self, x: torch.Tensor, meta: AttnBatch, cache: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), meta, cache)
        return x + self.mlp(self.ln_2(x))


class GPT2Backbone(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.wpe = nn.Embedding(cfg.max_position, cfg.hidden_size)
        self.h = nn.ModuleList(GPT2Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)


class GPT2LMHeadModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.transformer = GPT2Backbone(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        """GPT-2's lm_head always shares the token embedding's weight."""
        self.lm_head.weight = self.transformer.wte.weight

    def forward(self, input_ids: torch.Tensor, meta: AttnBatch,
                kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                logits_index: torch.Tensor | None = None) -> torch.Tensor:
        t = self.transformer
        x = t.wte(input_ids) + t.wpe(meta.positions)  # [B, T, C]
        for i, block in enumerate(t.h):
            x = block(x, meta, kv[i] if kv is not None else None)
        if logits_index is not None:
            x = x[torch.arange(x.shape[0], device=x.device), logits_index].unsqueeze(1)
        logits = self.lm_head(t.ln_f(x)).float()
        return logits[:, 0] if logits_index is not None else logits
