"""The engine: schedule -> execute -> update, over one paged KV cache.

`generate`, `stream`, `profile`, `bench` and the server all drive this class; there is no second engine.
Requests join and leave the running batch between steps (continuous batching). A step is either a
prefill of newly admitted requests (ragged, right-padded, prefix-cache aware) or one decode token for
every running request.
"""

from __future__ import annotations

import logging
import queue
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from llmspeed.layers.attention import AttnBatch, causal_mask
from llmspeed.layers.sampler import sample_batch
from llmspeed.models.config import ModelConfig
from llmspeed.models.tokenizer import Tokenizer
from llmspeed.runtime.block_pool import BlockPool
from llmspeed.runtime.compiled import CompiledDecode, prepare_for_compile
from llmspeed.runtime.kv_cache import KVCache
from llmspeed.runtime.options import RuntimeOptions
from llmspeed.runtime.plans import prepare_model
from llmspeed.runtime.sequence import SamplingParams, Sequence, Status

log = logging.getLogger(__name__)


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


@dataclass
class Batch:
    seqs: list[Sequence]
    is_prefill: bool


class Engine:
    def __init__(self, model: nn.Module, tokenizer: Tokenizer, config: EngineConfig | None = None,
                 options: RuntimeOptions | None = None, decode_fn: CompiledDecode | None = None) -> None:
        """`options`: how the model runs (plans, int8 activations, compiled decode); `decode_fn`: a compiled decode
        step to reuse (LLM keeps one across engines, so a rebuilt engine does not compile again)."""
        self.model = model
        self.tokenizer = tokenizer
        self.config = config or EngineConfig()
        mcfg: ModelConfig = model.config  # type: ignore[assignment]
        self.max_model_len = min(self.config.max_model_len or mcfg.max_position, mcfg.max_position)
        self.eos_ids = frozenset(tokenizer.eos_token_ids or mcfg.eos_token_ids)
        dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
        num_blocks = -(-self.config.kv_cache_tokens // self.config.block_size)
        self.kv = KVCache(mcfg.n_layers, mcfg.n_kv_heads, mcfg.head_dim, num_blocks, self.config.block_size,
                          dtype=dtype if dtype in (torch.float32, torch.bfloat16, torch.float16) else torch.float32)
        self.pool = BlockPool(num_blocks, self.config.block_size, self.config.enable_prefix_cache)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._inbox: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()  # thread-safe entry point
        self.num_preemptions = 0
        self.options = options or RuntimeOptions()
        prepare_model(model, self.options)  # again: compression may have replaced layers since load
        if decode_fn is None and self.options.compile is not None:
            decode_fn = CompiledDecode(model, self.options.compile)
        if decode_fn is not None:
            prepare_for_compile(model)
        self.decode_fn = decode_fn  # the compiled decode step when the recipe has `compile`, else None
        self.on_logits: Callable[[Batch, torch.Tensor], None] | None = None  # sees each step's [B, V] logits

    # -- requests ---------------------------------------------------------------------------------
    def make_sequence(self, prompt_ids: list[int], params: SamplingParams, seq_id: str | None = None) -> Sequence:
        if not prompt_ids:
            raise ValueError("prompt is empty")
        if len(prompt_ids) >= self.max_model_len:
            raise ValueError(f"prompt has {len(prompt_ids)} tokens; the context window is {self.max_model_len}")
        if self.pool.blocks_needed(len(prompt_ids) + 1) > len(self.pool.blocks):
            raise ValueError(f"prompt has {len(prompt_ids)} tokens; the KV cache holds {self.kv.capacity_tokens}")
        return Sequence(prompt_ids, params, self.tokenizer, seq_id)

    def add(self, seq: Sequence) -> Sequence:
        """Queue a request (safe from any thread; it joins at the next step)."""
        self._inbox.put(("add", seq))
        return seq

    def abort(self, seq_id: str) -> None:
        self._inbox.put(("abort", seq_id))

    def has_work(self) -> bool:
        return bool(self.waiting or self.running or not self._inbox.empty())

    def _drain_inbox(self) -> None:
        while True:
            try:
                op, arg = self._inbox.get_nowait()
            except queue.Empty:
                return
            if op == "add":
                self.waiting.append(arg)  # type: ignore[arg-type]
            else:
                for s in [*self.waiting, *self.running]:
                    if s.seq_id == arg and not s.finished:
                        self._finish(s, "abort")

    # -- schedule ---------------------------------------------------------------------------------
    def schedule(self) -> Batch | None:
        admitted: list[Sequence] = []
        budget = self.config.max_batch_tokens
        while self.waiting and len(self.running) + len(admitted) < self.config.max_batch:
            seq = self.waiting[0]
            need = seq.num_tokens
            if admitted and need > budget:
                break
            alloc = self.pool.allocate(seq.all_ids)
            if alloc is None:
                break
            self.waiting.popleft()
            seq.block_table, seq.num_computed = alloc
            if not seq.output_ids:
                seq.num_cached_prompt = seq.num_computed
            seq.status = Status.RUNNING
            admitted.append(seq)
            budget -= need - seq.num_computed
        if admitted:
            self.running.extend(admitted)
            return Batch(admitted, is_prefill=True)
        if not self.running:
            return None
        for seq in list(self.running):  # every running sequence needs a slot for one more token
            while seq in self.running and not self.pool.ensure_capacity(seq.block_table, seq.num_tokens):
                victim = self.running[-1]
                self._preempt(victim)
        return Batch(list(self.running), is_prefill=False) if self.running else None

    def _preempt(self, seq: Sequence) -> None:
        """Out of KV blocks: free the newest request and recompute it later (its tokens so far are kept)."""
        self.running.remove(seq)
        self.pool.release(seq.block_table)
        seq.num_computed = 0
        seq.status = Status.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1
        log.debug("preempted %s", seq.seq_id)

    # -- execute ----------------------------------------------------------------------------------
    def build_inputs(self, seqs: list[Sequence]) -> tuple[torch.Tensor, AttnBatch, torch.Tensor]:
        B = len(seqs)
        news = [s.all_ids[s.num_computed:] for s in seqs]
        T = max(len(n) for n in news)
        lens = [s.num_tokens for s in seqs]
        S = max(lens)
        bs = self.kv.block_size
        if T == 1 and B == 1:  # the hot path: one decode token, no padding, often contiguous blocks
            s = seqs[0]
            pos = torch.tensor([[S - 1]])
            table = s.block_table[: -(-S // bs)]
            slot = table[(S - 1) // bs] * bs + (S - 1) % bs
            contiguous = table == list(range(table[0], table[0] + len(table)))
            meta = AttnBatch(positions=pos, mask=None, slot_mapping=torch.tensor([slot]),
                             gather_idx=None if contiguous else torch.tensor([self.kv.slots_for(table, 0, S)]),
                             kv_range=(table[0] * bs, S) if contiguous else None)
            return torch.tensor([news[0]]), meta, torch.zeros(1, dtype=torch.long)
        scratch = self.kv.scratch_slot
        ids = torch.zeros(B, T, dtype=torch.long)
        pos = torch.zeros(B, T, dtype=torch.long)
        slot_map = torch.full((B, T), scratch, dtype=torch.long)
        gather = torch.full((B, S), scratch, dtype=torch.long)
        for b, (s, new) in enumerate(zip(seqs, news, strict=True)):
            n, start = len(new), s.num_computed
            ids[b, :n] = torch.tensor(new)
            pos[b, :n] = torch.arange(start, start + n)
            slots = self.kv.slots_for(s.block_table, 0, s.num_tokens)
            slot_map[b, :n] = torch.tensor(slots[start:])
            gather[b, : s.num_tokens] = torch.tensor(slots)
        uniform_decode = T == 1 and min(lens) == S  # every row attends to all S keys: no mask needed
        # fresh equal-length prompts (no cached prefix, no padding): plain causal attention over the new tokens
        fresh = T > 1 and all(s.num_computed == 0 and len(n) == T for s, n in zip(seqs, news, strict=True))
        meta = AttnBatch(positions=pos, mask=None if uniform_decode or fresh else causal_mask(pos, S),
                         slot_mapping=slot_map.view(-1), gather_idx=gather, causal=fresh)
        last = torch.tensor([len(n) - 1 for n in news])
        return ids, meta, last

    @torch.inference_mode()
    def execute(self, batch: Batch) -> list[int]:
        ids, meta, last = self.build_inputs(batch.seqs)
        if self.decode_fn is not None and not batch.is_prefill and self.decode_fn.supports(len(batch.seqs)):
            logits = self.decode_fn(ids, meta, self.kv.layers, self.kv.scratch_slot)  # [B, V]
        else:
            logits = self.model(ids, meta, self.kv.layers, logits_index=last)  # [B, V]
        if self.on_logits is not None:
            self.on_logits(batch, logits)
        ps = [s.params for s in batch.seqs]
        return sample_batch(logits, [p.temperature for p in ps], [p.top_k for p in ps], [p.top_p for p in ps],
                            [s.generator for s in batch.seqs])

    # -- update -----------------------------------------------------------------------------------
    def step(self) -> list[Sequence]:
        """Run one engine step; returns the sequences that received a token (or finished)."""
        self._drain_inbox()
        finished_early = [s for s in list(self.waiting) + self.running if s.finished]
        for s in finished_early:
            self._remove(s)
        batch = self.schedule()
        if batch is None:
            return finished_early
        t0 = time.perf_counter()
        tokens = self.execute(batch)
        t1 = time.perf_counter()
        dt = t1 - t0
        for seq, tok in zip(batch.seqs, tokens, strict=True):
            if batch.is_prefill:
                seq.timings.t_prefill += dt
            else:
                seq.timings.t_decode += dt
            seq.num_computed = seq.num_tokens
            if batch.is_prefill:
                self.pool.register_full_blocks(seq.block_table, seq.all_ids, seq.num_computed)
            self._append_token(seq, tok, t1)
        for seq in batch.seqs:
            if seq.finished:
                self._remove(seq)
        return batch.seqs + finished_early

    def _append_token(self, seq: Sequence, tok: int, now: float) -> None:
        seq.output_ids.append(tok)
        if seq.timings.first_token is None:
            seq.timings.first_token = now
        seq.timings.token_times.append(now)
        is_eos = tok in self.eos_ids and not seq.params.ignore_eos
        tp = time.perf_counter()
        if not is_eos:
            seq.decoder.push(tok)
            seq.text = seq.decoder.text
        if is_eos:
            seq.finish("stop")
        elif seq.params.stop and self._cut_stop(seq):
            seq.finish("stop")
        elif len(seq.output_ids) >= seq.params.max_new_tokens or seq.num_tokens >= self.max_model_len:
            seq.text += seq.decoder.flush()
            seq.finish("length")
        seq.timings.t_post += time.perf_counter() - tp

    @staticmethod
    def _cut_stop(seq: Sequence) -> bool:
        hits = [i for i in (seq.text.find(s) for s in seq.params.stop) if i >= 0]
        if not hits:
            return False
        seq.text = seq.text[: min(hits)]
        return True

    def _finish(self, seq: Sequence, reason: str) -> None:
        seq.finish(reason)

    def _remove(self, seq: Sequence) -> None:
        if seq in self.running:
            self.running.remove(seq)
        if seq in self.waiting:
            self.waiting.remove(seq)
        self.pool.release(seq.block_table)

    def run_until_done(self, seqs: list[Sequence]) -> None:
        for s in seqs:
            self.add(s)
        while any(not s.finished for s in seqs):
            self.step()
