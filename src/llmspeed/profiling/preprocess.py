"""Tokenize many texts fast: one process, a process pool (`workers`), or `tokenizers`' own `encode_batch`
(parallel in Rust). `benchmarks/preprocess.py` compares the three; `method="auto"` uses the winner there
(see docs/decisions.md, "Profiling and bench").

Only `tokenizers` is imported here, so pool workers (spawned, not forked) start in a fraction of a second.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)
METHODS = ("auto", "serial", "pool", "batch")
AUTO_METHOD = "batch"  # measured winner, benchmarks/preprocess.py

_worker_tok: Any = None


@dataclass(frozen=True)
class PreprocessConfig:
    method: str = "auto"
    workers: int = 0  # 0 -> os.cpu_count()
    chunk_size: int = 64  # texts per pool task

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown tokenization method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.workers < 0 or self.chunk_size <= 0:
            raise ValueError("workers must be >= 0 and chunk_size > 0")

    @property
    def n_workers(self) -> int:
        return self.workers or os.cpu_count() or 1


def _raw(tokenizer: Any) -> Any:
    """The `tokenizers.Tokenizer` inside llmspeed's wrapper (or the argument itself)."""
    return getattr(tokenizer, "tok", tokenizer)


def _init_worker(tokenizer_json: str) -> None:
    global _worker_tok
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per worker: the pool is the parallelism
    from tokenizers import Tokenizer

    _worker_tok = Tokenizer.from_str(tokenizer_json)


def _encode_chunk(texts: list[str]) -> list[list[int]]:
    return [e.ids for e in _worker_tok.encode_batch(texts, add_special_tokens=False)]


def encode_serial(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    tok = _raw(tokenizer)
    return [tok.encode(t, add_special_tokens=False).ids for t in texts]


def encode_batch(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in _raw(tokenizer).encode_batch(list(texts), add_special_tokens=False)]


def encode_pool(tokenizer: Any, texts: Sequence[str], workers: int, chunk_size: int = 64) -> list[list[int]]:
    import multiprocessing as mp

    chunks = [list(texts[i:i + chunk_size]) for i in range(0, len(texts), chunk_size)]
    ctx = mp.get_context("spawn")  # fork after torch/rayon threads started is unsafe
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(_raw(tokenizer).to_str(),)) as ex:
        out: list[list[int]] = []
        for part in ex.map(_encode_chunk, chunks):
            out.extend(part)
    return out


def tokenize_many(tokenizer: Any, texts: Sequence[str], cfg: PreprocessConfig | None = None) -> list[list[int]]:
    """Token ids of every text (no special tokens added), in order."""
    cfg = cfg or PreprocessConfig()
    method = AUTO_METHOD if cfg.method == "auto" else cfg.method
    if not texts:
        return []
    if method == "serial":
        return encode_serial(tokenizer, texts)
    if method == "batch":
        return encode_batch(tokenizer, texts)
    return encode_pool(tokenizer, texts, cfg.n_workers, cfg.chunk_size)
