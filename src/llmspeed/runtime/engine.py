"""The engine: schedule -> execute -> update, over one paged KV cache.

`generate`, `stream`, `profile`, `bench` and the server all drive this class; there is no second engine.
Its parts follow vLLM v1 / nano-vllm: the `Scheduler` (admission, preemption, blocks, prefix cache,
the thread-safe inbox), the `ModelRunner` (inputs, forward, sampling) and the `OutputProcessor` (tokens,
finishing, timings; detokenization on demand). Requests join and leave the running batch between steps
(continuous batching). One request never fails another: a row whose forward or sampling raises
finishes with reason "error" and the rest of the batch carries on.

Other threads read the engine only through `stats()`, a frozen snapshot replaced at the end of each step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from llmspeed.models.config import ModelConfig
from llmspeed.models.tokenizer import Tokenizer
from llmspeed.runtime.compiled import CompiledDecode, prepare_for_compile, reuse_or_build
from llmspeed.runtime.config import EngineConfig
from llmspeed.runtime.kv_cache import KVCache
from llmspeed.runtime.model_runner import ModelRunner, RowResult
from llmspeed.runtime.options import RuntimeOptions
from llmspeed.runtime.output_processor import OutputProcessor
from llmspeed.runtime.plans import prepare_model
from llmspeed.runtime.scheduler import Batch, Scheduler
from llmspeed.runtime.sequence import SamplingParams, Sequence
from llmspeed.runtime.spec.config import DraftConfig
from llmspeed.runtime.spec.decoder import SpecDecoder, SpecResult

__all__ = ["Batch", "Engine", "EngineConfig", "EngineLimits", "EngineStats"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineLimits:
    """What never changes for the life of an engine (front ends size requests with it)."""

    max_model_len: int  # context window
    kv_capacity_tokens: int
    block_size: int
    max_batch: int

    @property
    def max_request_tokens(self) -> int:
        """Prompt + generated tokens one request may hold (a block of KV is kept as headroom)."""
        return min(self.max_model_len, self.kv_capacity_tokens - self.block_size)


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of the engine at the end of a step; safe to read from any thread (replaced, never mutated)."""

    num_waiting: int = 0  # requests admitted to the queue, not yet running
    num_running: int = 0  # the running batch
    kv_blocks_used: int = 0
    kv_blocks_total: int = 0
    prefix_cache_hit_tokens: int = 0
    prefix_cache_query_tokens: int = 0
    num_preemptions: int = 0
    num_failed: int = 0  # requests finished with reason "error" (their forward or sampling raised)
    num_steps: int = 0
    spec_draft_tokens: int = 0  # speculative decoding: tokens proposed and verified
    spec_accepted_tokens: int = 0  # of which the target accepted
    spec_verify_rows: int = 0  # row-verifications with at least one proposal

    @property
    def kv_usage(self) -> float:
        return self.kv_blocks_used / max(self.kv_blocks_total, 1)

    @property
    def spec_acceptance_rate(self) -> float:
        return self.spec_accepted_tokens / self.spec_draft_tokens if self.spec_draft_tokens else 0.0

    @property
    def spec_mean_accepted_len(self) -> float:
        """Tokens a verified row emits per pass: accepted drafts + the one the target adds (1.0 = no gain)."""
        return (self.spec_accepted_tokens + self.spec_verify_rows) / self.spec_verify_rows if self.spec_verify_rows \
            else 0.0


class Engine:
    def __init__(self, model: nn.Module, tokenizer: Tokenizer, config: EngineConfig | None = None,
                 options: RuntimeOptions | None = None, decode_fn: CompiledDecode | None = None,
                 draft: DraftConfig | None = None, draft_model: nn.Module | None = None) -> None:
        """`options`: how the model runs (plans, int8 activations, compiled decode); `decode_fn`: a compiled decode
        step to reuse (LLM keeps one across engines, so a rebuilt engine does not compile again); `draft`:
        speculative decoding (prompt lookup, or `draft_model`, a model sharing the tokenizer)."""
        self.model = model
        self.tokenizer = tokenizer
        self.config = config or EngineConfig()
        mcfg: ModelConfig = model.config  # type: ignore[assignment]
        self.max_model_len = min(self.config.max_model_len or mcfg.max_position, mcfg.max_position)
        self.eos_ids = frozenset(tokenizer.eos_token_ids or mcfg.eos_token_ids)
        p0 = next(p for p in model.parameters() if p.is_floating_point())
        dtype = p0.dtype
        self.kv = KVCache(mcfg.n_layers, mcfg.n_kv_heads, mcfg.head_dim, self.config.num_blocks, self.config.block_size,
                          dtype=dtype if dtype in (torch.float32, torch.bfloat16, torch.float16) else torch.float32,
                          device=p0.device)  # on the model's device (runtime/device.py)
        self.limits = EngineLimits(self.max_model_len, self.kv.capacity_tokens, self.config.block_size,
                                   self.config.max_batch)
        self.scheduler = Scheduler(self.config)
        self.options = options or RuntimeOptions()
        prepare_model(model, self.options)  # again: compression may have replaced layers since load
        if decode_fn is None and self.options.compile is not None:
            decode_fn = reuse_or_build(model, self.options.compile, None)
        if decode_fn is not None:
            prepare_for_compile(model)
        self.runner = ModelRunner(model, self.kv, decode_fn)
        self.processor = OutputProcessor(self.eos_ids, self.max_model_len)
        self.spec = None if draft is None else SpecDecoder(draft, self.runner, self.kv, self.scheduler.pool,
                                                          self.max_model_len, draft_model)
        self.on_logits: Callable[[Batch, torch.Tensor], None] | None = None  # sees each step's [B, V] logits
        self.num_failed = 0
        self._num_steps = 0
        self._stats = EngineStats()
        self._publish_stats()

    @property
    def decode_fn(self) -> Callable[..., torch.Tensor] | None:
        """The compiled decode step (recipe `compile`), or None when decode runs eagerly."""
        return self.runner.decode_fn

    # -- requests (any thread) ----------------------------------------------------------------------
    def make_sequence(self, prompt_ids: list[int], params: SamplingParams, seq_id: str | None = None) -> Sequence:
        if not prompt_ids:
            raise ValueError("prompt is empty")
        if len(prompt_ids) >= self.max_model_len:
            raise ValueError(f"prompt has {len(prompt_ids)} tokens; the context window is {self.max_model_len}")
        if self.scheduler.pool.blocks_needed(len(prompt_ids) + 1) > self.config.num_blocks:
            raise ValueError(f"prompt has {len(prompt_ids)} tokens; the KV cache holds {self.kv.capacity_tokens}")
        return Sequence(prompt_ids, params, self.tokenizer, seq_id)

    def add(self, seq: Sequence) -> Sequence:
        """Queue a request (safe from any thread; it joins at the next step)."""
        self.scheduler.add(seq)
        return seq

    def abort(self, seq_id: str) -> None:
        """Abort a request (safe from any thread; its blocks are freed at the next step)."""
        self.scheduler.abort(seq_id)

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def stats(self) -> EngineStats:
        return self._stats

    # -- the loop (one thread) ----------------------------------------------------------------------
    def step(self) -> list[Sequence]:
        """Run one engine step; returns the sequences that received a token or finished."""
        self.scheduler.drain_inbox()
        done = self.scheduler.reap_finished()  # aborted since the last step
        batch = self.scheduler.schedule()
        if batch is not None:
            t0 = time.perf_counter()
            if (self.spec is not None and not batch.is_prefill and self.on_logits is None
                    and self.spec.propose(batch)):  # a verify step: last token + drafts of every row, one pass
                self._update_spec(batch, self.spec.execute(batch), time.perf_counter() - t0)
            else:
                results = self.runner.execute(batch, self.on_logits)  # per row: a token id, or why it failed
                self._update(batch, results, time.perf_counter() - t0)
            done = batch.seqs + done
            if self.spec is not None:
                self.spec.forget(done)
        self._num_steps += 1
        self._publish_stats()
        return done

    def _update(self, batch: Batch, results: list[RowResult], seconds: float) -> None:
        now = time.perf_counter()
        ok: list[Sequence] = []
        tokens: list[int] = []
        for seq, r in zip(batch.seqs, results, strict=True):
            if isinstance(r, Exception):
                self.processor.fail(seq, r)
                self.num_failed += 1
            else:
                ok.append(seq)
                tokens.append(r)
        self.scheduler.commit(batch, ok)
        self.processor.process(ok, tokens, batch.is_prefill, seconds, now)
        self.scheduler.free(batch.seqs)

    def _update_spec(self, batch: Batch, results: list[SpecResult], seconds: float) -> None:
        """A verify step: each row appends its emitted tokens one by one (stopping where it finishes); its K/V is
        then valid up to the last emitted token, and what was written past it is rolled back."""
        assert self.spec is not None
        now = time.perf_counter()
        for seq, r in zip(batch.seqs, results, strict=True):
            if isinstance(r, Exception):
                self.processor.fail(seq, r)
                self.num_failed += 1
                self.spec.finish_row(seq, 0)
                continue
            seq.timings.t_decode += seconds
            emitted = 0
            for tok in r:
                self.processor.append_token(seq, tok, now)
                emitted += 1
                if seq.finished:
                    break
            seq.num_computed = seq.num_tokens - 1  # the last emitted token is computed next step
            self.spec.finish_row(seq, emitted)
        self.scheduler.free(batch.seqs)

    def _publish_stats(self) -> None:
        sched, pool = self.scheduler, self.scheduler.pool
        self._stats = EngineStats(
            num_waiting=len(sched.waiting), num_running=len(sched.running), kv_blocks_used=pool.num_used,
            kv_blocks_total=len(pool.blocks), prefix_cache_hit_tokens=pool.prefix_hit_tokens,
            prefix_cache_query_tokens=pool.prefix_query_tokens, num_preemptions=sched.num_preemptions,
            num_failed=self.num_failed, num_steps=self._num_steps,
            spec_draft_tokens=self.spec.num_draft_tokens if self.spec else 0,
            spec_accepted_tokens=self.spec.num_accepted_tokens if self.spec else 0,
            spec_verify_rows=self.spec.num_verify_rows if self.spec else 0)

    def run_until_done(self, seqs: list[Sequence]) -> None:
        for s in seqs:
            self.add(s)
        while any(not s.finished for s in seqs):
            self.step()
