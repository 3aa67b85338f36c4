"""Training data for distillation: token windows cut from text parts, and a deterministic order of batches.

The texts are passed in (compress never reads the evaluation package): the CLI gives the calibration plays and
CPython's pydoc topics, never the held-out plays. The windows are written once to `data.safetensors` so every
rank, and every resumed session, reads exactly the same tokens; `batch_indices(step)` depends only on the seed,
the step and the number of windows, so a resumed run continues with the very batches it would have seen.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillData:
    """`tokens`: [n, seq_len] int64 non-overlapping windows; `sources`: (name, windows) per text part used."""

    tokens: torch.Tensor
    sources: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if self.tokens.dim() != 2 or self.tokens.shape[0] == 0 or self.tokens.shape[1] < 2:
            raise ValueError(f"distillation data must be [n >= 1, seq_len >= 2] tokens, got {tuple(self.tokens.shape)}")

    @property
    def n(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def digest(self) -> str:
        """sha256 of the token ids: a resumed run checks it trains on the same data."""
        return hashlib.sha256(self.tokens.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()

    def summary(self) -> dict[str, Any]:
        return {"windows": self.n, "seq_len": self.seq_len, "tokens": self.n * self.seq_len,
                "sources": {name: k for name, k in self.sources}, "sha256": self.digest}


def token_windows(tokenizer: Any, parts: Iterable[tuple[str, str]], seq_len: int) -> DistillData:
    """Every non-overlapping window of `seq_len` tokens of each part, parts in the given order."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    parts = list(parts)
    encoded = (tokenizer.encode_batch([t for _, t in parts]) if hasattr(tokenizer, "encode_batch")
               else [tokenizer.encode(t) for _, t in parts])
    rows: list[list[int]] = []
    sources: list[tuple[str, int]] = []
    for (name, _), ids in zip(parts, encoded, strict=True):
        wins = [ids[i: i + seq_len] for i in range(0, len(ids) - seq_len + 1, seq_len)]
        if wins:
            rows += wins
            sources.append((name, len(wins)))
    if not rows:
        raise ValueError(f"the distillation texts are shorter than one window of {seq_len} tokens")
    return DistillData(torch.tensor(rows, dtype=torch.long), tuple(sources))  # [n, seq_len]


def save_data(data: DistillData, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"tokens": data.tokens.contiguous()}, str(path), metadata={"sources": json.dumps(list(data.sources))})


def load_data(path: Path) -> DistillData:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            tokens = f.get_tensor("tokens")
            sources = json.loads((f.metadata() or {}).get("sources", "[]"))
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise ValueError(f"unreadable distillation data {path}: {e}") from None
    return DistillData(tokens.long(), tuple((str(n), int(k)) for n, k in sources))


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """[n] a permutation of the windows for one epoch, a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Windows of global batch `step` (1-based): items (step-1)*B .. step*B-1 of the concatenated epoch orders."""
    if step < 1:
        raise ValueError(f"steps count from 1, got {step}")
    start = (step - 1) * batch_size
    out: list[int] = []
    order, epoch = None, -1
    for k in range(start, start + batch_size):
        if k // n != epoch:
            epoch = k // n
            order = epoch_order(n, seed, epoch)
        out.append(int(order[k % n]))  # type: ignore[index]
    return out


def rank_rows(indices: list[int], rank: int, world: int) -> list[int]:
    """This rank's contiguous share of a global batch (the batch size is a multiple of the world size)."""
    if len(indices) % world:
        raise ValueError(f"global batch {len(indices)} is not divisible by {world} workers")
    per = len(indices) // world
    return indices[rank * per: (rank + 1) * per]
