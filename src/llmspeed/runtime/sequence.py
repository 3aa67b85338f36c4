"""A request's state inside the engine: tokens, blocks, sampling parameters, text and timings."""

from __future__ import annotations

import enum
import itertools
import time
from dataclasses import dataclass, field

import torch

from llmspeed.models.tokenizer import IncrementalDecoder, Tokenizer

_ids = itertools.count()


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 -> greedy
    top_k: int = 0  # 0 -> off
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be > 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")
        object.__setattr__(self, "stop", tuple(self.stop))

    @property
    def deterministic(self) -> bool:
        return self.temperature == 0.0 or self.seed is not None


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Timings:
    arrival: float = field(default_factory=time.perf_counter)
    t_prefill: float = 0.0
    t_decode: float = 0.0
    t_post: float = 0.0
    first_token: float | None = None  # perf_counter timestamp
    token_times: list[float] = field(default_factory=list)
    finished: float | None = None

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.arrival


class Sequence:
    def __init__(self, prompt_ids: list[int], params: SamplingParams, tokenizer: Tokenizer,
                 seq_id: str | None = None) -> None:
        self.seq_id = seq_id if seq_id is not None else f"seq-{next(_ids)}"
        self.prompt_ids = list(prompt_ids)
        self.output_ids: list[int] = []
        self.params = params
        self.status = Status.WAITING
        self.finish_reason: str | None = None
        self.block_table: list[int] = []
        self.num_computed = 0  # tokens whose K/V are in the cache
        self.num_cached_prompt = 0  # prompt tokens served from the prefix cache
        self.generator = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
        self.decoder = IncrementalDecoder(tokenizer)
        self.text = ""  # visible text (stop strings cut)
        self._emitted = 0  # chars of text already handed out by pop_text
        self.timings = Timings()

    @property
    def all_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def finished(self) -> bool:
        return self.status is Status.FINISHED

    def _holdback(self) -> int:
        """Chars at the end of text that could still start a stop string: do not stream them yet."""
        hold = 0
        for s in self.params.stop:
            for n in range(min(len(s) - 1, len(self.text)), 0, -1):
                if self.text.endswith(s[:n]):
                    hold = max(hold, n)
                    break
        return hold

    def pop_text(self) -> str:
        """New visible text since the last call (never half a character, never part of a stop string)."""
        end = len(self.text) if self.finished else len(self.text) - self._holdback()
        piece = self.text[self._emitted:end]
        self._emitted = max(self._emitted, end)
        return piece

    def finish(self, reason: str) -> None:
        self.status = Status.FINISHED
        self.finish_reason = reason
        self.timings.finished = time.perf_counter()
