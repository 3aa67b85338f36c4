"""A request's state inside the engine: tokens, blocks, sampling parameters, text and timings."""

from __future__ import annotations

import enum
import itertools
import math
import time
from dataclasses import dataclass, field

import torch

from llmspeed.models.tokenizer import Tokenizer
from llmspeed.runtime.logprobs import TokenLogprob
from llmspeed.runtime.output_processor import Detokenizer

_ids = itertools.count()
GREEDY_TEMPERATURE = 1e-5  # a temperature below this samples greedily (vLLM's epsilon)
GREEDY_TOP_P = 1e-6  # a nucleus this small is the top token alone: its probability is >= 1/V > 1e-6
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1  # what torch.Generator.manual_seed accepts


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 -> greedy
    top_k: int = 0  # 0 -> off
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    logprobs: int | None = None  # generated tokens: keep each one's logprob and this many top alternatives
    prompt_logprobs: int | None = None  # prompt tokens, from the prefill forward (never from the prefix cache)

    def __post_init__(self) -> None:
        """Validates, then normalises: a temperature below GREEDY_TEMPERATURE or a top_p below GREEDY_TOP_P
        (subnormals included) becomes greedy (temperature 0, top_p 1), which is what sampling converges to."""
        for name in ("temperature", "top_p"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be > 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.seed is not None and not SEED_MIN <= self.seed <= SEED_MAX:
            raise ValueError(f"seed must be in [{SEED_MIN}, {SEED_MAX}], got {self.seed}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        for name in ("logprobs", "prompt_logprobs"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ValueError(f"{name} must be None or an int >= 0, got {v!r}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")
        object.__setattr__(self, "stop", tuple(self.stop))
        if self.temperature < GREEDY_TEMPERATURE or self.top_p < GREEDY_TOP_P:
            object.__setattr__(self, "temperature", 0.0)
            object.__setattr__(self, "top_p", 1.0)
        else:
            object.__setattr__(self, "temperature", float(self.temperature))
            object.__setattr__(self, "top_p", float(self.top_p))

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
        self.timings = Timings()
        self.detokenizer = Detokenizer(tokenizer, params.stop, self.timings)
        self.ended_on_eos = False  # the last output id is an EOS token (not part of the text)
        self.error: str | None = None  # why the request failed (finish_reason "error")
        self._emitted = 0  # chars of text already handed out by pop_text
        # speculative decoding (runtime/spec): this step's proposed tokens (verified after the last token) and,
        # for a draft model, their draft distributions [k, V]; the proposer's per-request state; counters
        self.draft_ids: list[int] = []
        self.draft_probs: torch.Tensor | None = None
        self.spec_state: object | None = None
        self.num_draft_tokens = 0  # tokens proposed and verified
        self.num_accepted_tokens = 0  # of which accepted
        self.num_verifies = 0  # verify passes this request took part in with at least one draft
        self.prompt_logprobs: list[TokenLogprob | None] | None = None  # set by the prefill (params.prompt_logprobs)
        self.output_logprobs: list[TokenLogprob] = []  # one per output id (params.logprobs)

    @property
    def needs_prompt_logprobs(self) -> bool:
        """Its prefill must score every prompt position (so it may not start from cached prefix blocks)."""
        return self.params.prompt_logprobs is not None and self.prompt_logprobs is None

    @property
    def all_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def finished(self) -> bool:
        return self.status is Status.FINISHED

    @property
    def text(self) -> str:
        """Visible text so far (stop strings cut), detokenized on demand rather than in the engine step."""
        n = len(self.output_ids) - self.ended_on_eos
        self.detokenizer.sync(self.output_ids, n, final=self.finish_reason == "length")
        return self.detokenizer.text

    def _holdback(self, text: str) -> int:
        """Chars at the end of text that could still start a stop string: do not stream them yet."""
        hold = 0
        for s in self.params.stop:
            for n in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:n]):
                    hold = max(hold, n)
                    break
        return hold

    def pop_text(self) -> str:
        """New visible text since the last call (never half a character, never part of a stop string)."""
        text = self.text
        end = len(text) if self.finished else len(text) - self._holdback(text)
        piece = text[self._emitted:end]
        self._emitted = max(self._emitted, end)
        return piece

    def finish(self, reason: str) -> None:
        self.status = Status.FINISHED
        self.finish_reason = reason
        self.timings.finished = time.perf_counter()

    def fail(self, message: str) -> None:
        """Finish with reason "error": this request failed; others in its batch are unaffected."""
        self.error = message
        self.finish("error")
