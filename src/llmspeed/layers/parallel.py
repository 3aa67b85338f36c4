"""Megatron-style tensor-parallel layers over `torch.distributed` (gloo on CPU, nccl on CUDA).

A tensor-parallel block is built of ordinary modules holding one rank's shard plus three kinds that talk to the
other ranks:
- column-parallel q/k/v and gate/up: a plain `nn.Linear` holding this rank's output rows (heads, KV heads,
  intermediate channels) — no communication, so projection fusion and the attention code are unchanged;
- `RowParallelLinear` (o_proj, down_proj, GPT-2's c_proj): this rank's input columns, one all-reduce of the
  partial sums, the bias added once after the reduce;
- `VocabParallelEmbedding` (rows of the vocabulary: a masked lookup + one all-reduce) and `ParallelLMHead`
  (rows of the vocabulary: a local GEMM + one all-gather of the logits; tied to the embedding shard).

Every collective goes through a `TPGroup`, which also counts the time spent in it (`CommStats`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


@dataclass
class CommStats:
    """Time spent inside collectives (the waiting for the slower rank included)."""

    all_reduce_s: float = 0.0
    all_reduce_calls: int = 0
    all_gather_s: float = 0.0
    all_gather_calls: int = 0

    def reset(self) -> None:
        self.all_reduce_s = self.all_gather_s = 0.0
        self.all_reduce_calls = self.all_gather_calls = 0


@dataclass
class TPGroup:
    """One tensor-parallel group: this process's rank, the world size, the process group (None: the default)."""

    rank: int
    world: int
    group: dist.ProcessGroup | None = None
    stats: CommStats = field(default_factory=CommStats)

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"invalid tensor-parallel rank {self.rank} of {self.world}")

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:  # in place: the sum over ranks
        if self.world == 1:
            return x
        t0 = time.perf_counter()
        dist.all_reduce(x, group=self.group)
        self.stats.all_reduce_s += time.perf_counter() - t0
        self.stats.all_reduce_calls += 1
        return x

    def all_gather_last(self, x: torch.Tensor) -> torch.Tensor:  # [..., N] per rank -> [..., world*N]
        if self.world == 1:
            return x
        t0 = time.perf_counter()
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x, group=self.group)
        self.stats.all_gather_s += time.perf_counter() - t0
        self.stats.all_gather_calls += 1
        return torch.cat(parts, dim=-1)


def vocab_shard(vocab: int, world: int, rank: int) -> tuple[int, int, int]:
    """(first row, real rows, padded rows) of `rank`'s vocabulary shard: every shard has ceil(V / world) rows, so
    the all-gather sees equal parts; the last shard's padding rows are zero and its logits are cut off."""
    per = -(-vocab // world)
    start = min(rank * per, vocab)
    return start, min(per, vocab - start), per


class RowParallelLinear(nn.Linear):
    """y = all_reduce(x_shard @ W_shard^T) + b: this rank holds W's input columns [N, K / world]; b is whole."""

    def __init__(self, in_local: int, out_features: int, bias: bool, tp: TPGroup) -> None:
        super().__init__(in_local, out_features, bias=bias)
        self.tp = tp

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., K / world] -> [..., N]
        y = self.tp.all_reduce(F.linear(x, self.weight))  # partial sums [..., N] -> the full product
        return y + self.bias if self.bias is not None else y


class VocabParallelEmbedding(nn.Embedding):
    """Rows [start, start + real) of the table ([padded, C] here); other ids look up zeros; one all-reduce."""

    def __init__(self, vocab: int, dim: int, tp: TPGroup) -> None:
        self.vocab_start, self.vocab_real, padded = vocab_shard(vocab, tp.world, tp.rank)
        super().__init__(padded, dim)
        self.tp = tp
        self.full_vocab = vocab

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # [B, T] -> [B, T, C]
        local = ids - self.vocab_start
        mine = (local >= 0) & (local < self.vocab_real)  # [B, T]
        out = F.embedding(local.clamp(0, self.num_embeddings - 1), self.weight)  # [B, T, C]
        out = out * mine.unsqueeze(-1).to(out.dtype)
        return self.tp.all_reduce(out)


class ParallelLMHead(nn.Linear):
    """Logits of this rank's vocabulary rows, all-gathered: [..., C] -> [..., V] on every rank."""

    def __init__(self, dim: int, vocab: int, tp: TPGroup) -> None:
        _, _, padded = vocab_shard(vocab, tp.world, tp.rank)
        super().__init__(dim, padded, bias=False)
        self.tp = tp
        self.full_vocab = vocab

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = F.linear(x, self.weight)  # [..., padded]
        return self.tp.all_gather_last(local)[..., : self.full_vocab]  # [..., V]
