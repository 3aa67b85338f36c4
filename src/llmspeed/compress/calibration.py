"""Calibration data (token windows from the calibration plays) and activation statistics for compression.

Calibration windows come only from `data.texts.CALIBRATION_PLAYS`, which never overlap the
held-out evaluation plays. `collect_activation_stats` runs the model over those windows once, with forward
pre-hooks on the named modules, and accumulates per-input-channel sums of squares (Wanda's ‖X_j‖₂) and,
optionally, the Gram matrix XᵀX (GPTQ's Hessian up to a factor 2/n).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmspeed.data import texts
from llmspeed.layers.attention import AttnBatch
from llmspeed.models.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Calibration:
    """`tokens`: [n, seq_len] int64 windows; `sources`: which plays (or file) they were cut from."""

    tokens: torch.Tensor
    sources: tuple[str, ...] = ()
    seq_len: int = field(init=False)
    n: int = field(init=False)

    def __post_init__(self) -> None:
        if self.tokens.dim() != 2 or self.tokens.shape[0] == 0 or self.tokens.shape[1] < 2:
            raise ValueError(f"calibration tokens must be [n >= 1, seq_len >= 2], got {tuple(self.tokens.shape)}")
        object.__setattr__(self, "n", int(self.tokens.shape[0]))
        object.__setattr__(self, "seq_len", int(self.tokens.shape[1]))

    def batches(self, batch_size: int) -> Iterable[torch.Tensor]:
        for i in range(0, self.n, batch_size):
            yield self.tokens[i: i + batch_size]  # [b, seq_len]


@dataclass(frozen=True)
class CalibrationConfig:
    n: int = 128
    seq_len: int = 256
    path: str | None = None  # a UTF-8 text file instead of the calibration plays

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise ValueError(f"calibration n must be > 0, got {self.n}")
        if self.seq_len < 2:
            raise ValueError(f"calibration seq_len must be >= 2, got {self.seq_len}")


def _windows(ids: list[int], seq_len: int) -> list[list[int]]:
    return [ids[i: i + seq_len] for i in range(0, len(ids) - seq_len + 1, seq_len)]


def get_calibration(tokenizer: Tokenizer, n: int = 128, seq_len: int = 256, path: str | Path | None = None,
                    max_len: int | None = None) -> Calibration:
    """n non-overlapping windows of seq_len tokens, spread evenly over the calibration plays (deterministic).

    Plays are tokenized in `CALIBRATION_PLAYS` order until there are at least 2n windows (or none are left);
    then n windows are picked at evenly spaced indices. With `path`, the windows come from that file.
    `max_len` (the model's context window) caps seq_len.
    """
    cfg = CalibrationConfig(n=n, seq_len=min(seq_len, max_len or seq_len), path=str(path) if path else None)
    if cfg.path is not None:
        try:
            src = texts.text_file(cfg.path)
        except ValueError as e:
            raise ValueError(f"unreadable calibration file: {e}") from None
    else:
        src = texts.calibration_plays()
    windows: list[list[int]] = []
    used: list[str] = []
    for name, text in src.parts:
        windows += _windows(tokenizer.encode(text), cfg.seq_len)
        used.append(name)
        if len(windows) >= 2 * cfg.n:
            break
    if not windows:
        raise ValueError(f"calibration text {src.name!r} is shorter than one window of {cfg.seq_len} tokens")
    if len(windows) < cfg.n:
        log.warning("calibration: only %d windows of %d tokens available (asked for %d)", len(windows),
                    cfg.seq_len, cfg.n)
    k = min(cfg.n, len(windows))
    idx = torch.linspace(0, len(windows) - 1, k).round().long().tolist()
    tokens = torch.tensor([windows[i] for i in idx], dtype=torch.long)  # [n, seq_len]
    log.info("calibration: %d x %d tokens from %s", k, cfg.seq_len, ", ".join(used))
    return Calibration(tokens=tokens, sources=tuple(used))


@dataclass
class ActStats:
    """Input statistics of one module over the calibration tokens."""

    sq_sum: torch.Tensor  # [in] float64: Σ_tokens x_j²
    n_tokens: int = 0
    gram: torch.Tensor | None = None  # [in, in] float64: Σ_tokens x xᵀ (only when asked)

    @property
    def norm(self) -> torch.Tensor:  # [in] float32: ‖X_j‖₂ over all calibration tokens
        return self.sq_sum.sqrt().float()


class _Progress:
    """tqdm on a TTY, a few log lines otherwise."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.done, self._bar = total, desc, 0, None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="win", leave=False)

    def update(self, k: int) -> None:
        before, self.done = self.done, self.done + k
        if self._bar is not None:
            self._bar.update(k)
        elif self.total and (4 * before) // self.total != (4 * self.done) // self.total:
            log.info("%s: %d/%d windows", self.desc, self.done, self.total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class _SkippedHead(nn.Module):
    """Stands in for `lm_head` while its output is not needed: passes the hidden states through. Attribute reads
    go to the real head, which a tied quantized embedding reads its table from (`Int8Embedding.head`)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self._real = [head]  # a list: not registered as a submodule

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_real"][0], name)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return x


@contextmanager
def head_skipped(model: nn.Module) -> Iterator[None]:
    """Inside the block, the model's forward stops before the vocabulary projection (its most expensive matmul),
    returning hidden states; a model without an `lm_head` module is left alone."""
    head = getattr(model, "lm_head", None)
    if not isinstance(head, nn.Module):
        yield
        return
    model.lm_head = _SkippedHead(head)  # type: ignore[assignment]
    try:
        yield
    finally:
        model.lm_head = head  # type: ignore[assignment]


@torch.inference_mode()
def run_model(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The same full-causal forward as `LLM.logits`: [B, T] -> model output."""
    B, T = ids.shape
    return model(ids.long(), AttnBatch.no_cache(B, T))


@torch.inference_mode()
def collect_activation_stats(model: nn.Module, calib: Calibration | torch.Tensor, names: Iterable[str], *,
                             gram: bool = False, batch_size: int = 8) -> dict[str, ActStats]:
    """Per-input-channel ‖X‖₂ (and XᵀX if `gram`) of the modules `names` over the calibration windows.

    `calib` may also be a plain [n, T] int64 token tensor.
    """
    if isinstance(calib, torch.Tensor):
        calib = Calibration(tokens=calib.long() if calib.dim() == 2 else calib.long().unsqueeze(0))
    mods = dict(model.named_modules())
    names = list(names)
    missing = [n for n in names if n not in mods]
    if missing:
        raise ValueError(f"no such modules: {missing[:5]}")
    stats: dict[str, ActStats] = {}

    def make_hook(name: str) -> Callable[..., None]:
        def hook(_mod: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()  # [tokens, in]
            st = stats.get(name)
            if st is None:
                st = stats[name] = ActStats(sq_sum=torch.zeros(x.shape[1], dtype=torch.float64),
                                            gram=torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
                                            if gram else None)
            st.sq_sum += (x * x).sum(0).double()  # float32 per batch, float64 across batches
            st.n_tokens += x.shape[0]
            if st.gram is not None:
                st.gram += (x.T @ x).double()  # [in, in]
        return hook

    handles = [mods[n].register_forward_pre_hook(make_hook(n)) for n in names]
    # the vocabulary projection is the most expensive matmul and nobody asked for its input: skip it
    skip = head_skipped(model) if "lm_head" not in names else nullcontext()
    bar = _Progress(calib.n, "calibration")
    try:
        with skip:
            for ids in calib.batches(batch_size):
                run_model(model, ids)
                bar.update(ids.shape[0])
    finally:
        bar.close()
        for h in handles:
            h.remove()
    return stats
