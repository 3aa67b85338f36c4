"""The engine's configuration (frozen, validated): KV-cache size, batch limits, prefix caching."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineConfig:
    kv_cache_tokens: int = 8192
    block_size: int = 16
    max_batch: int = 32
    max_batch_tokens: int = 4096  # prompt tokens admitted into one prefill step
    max_model_len: int = 0  # 0 -> the model's context window
    enable_prefix_cache: bool = True

    def __post_init__(self) -> None:
        for name in ("kv_cache_tokens", "block_size", "max_batch", "max_batch_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_model_len < 0:
            raise ValueError(f"max_model_len must be >= 0, got {self.max_model_len}")

    @property
    def num_blocks(self) -> int:
        return -(-self.kv_cache_tokens // self.block_size)
