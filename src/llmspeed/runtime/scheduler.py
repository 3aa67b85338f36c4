"""The scheduler: which requests run in the next step, and where their KV lives.

It owns the waiting queue and the running batch, the `BlockPool` (block allocation and the prefix
cache) and the thread-safe inbox through which any thread adds or aborts requests. A step is either a
prefill of newly admitted requests (prefill-first, at most `max_batch_tokens` new prompt tokens,
prefix-cache aware) or one decode token for every running request. Out of KV blocks, the newest running
request is preempted (its blocks freed) and recomputed later; no request fails for lack of memory.
"""

from __future__ import annotations

import logging
import queue
from collections import deque
from dataclasses import dataclass

from llmspeed.runtime.block_pool import BlockPool
from llmspeed.runtime.config import EngineConfig
from llmspeed.runtime.sequence import Sequence, Status

log = logging.getLogger(__name__)


@dataclass
class Batch:
    seqs: list[Sequence]
    is_prefill: bool


class Scheduler:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.pool = BlockPool(config.num_blocks, config.block_size, config.enable_prefix_cache)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._inbox: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()  # thread-safe entry point
        self.num_preemptions = 0

    # -- the inbox (any thread) -------------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        self._inbox.put(("add", seq))

    def abort(self, seq_id: str) -> None:
        self._inbox.put(("abort", seq_id))

    def has_work(self) -> bool:
        return bool(self.waiting or self.running or not self._inbox.empty())

    # -- the engine thread --------------------------------------------------------------------------
    def drain_inbox(self) -> None:
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
                        s.finish("abort")

    def reap_finished(self) -> list[Sequence]:
        """Drop requests that finished outside a step (aborted, failed) and free their blocks."""
        done = [s for s in [*self.waiting, *self.running] if s.finished]
        self.free(done)
        return done

    def schedule(self) -> Batch | None:
        admitted: list[Sequence] = []
        budget = self.config.max_batch_tokens
        while self.waiting and len(self.running) + len(admitted) < self.config.max_batch:
            seq = self.waiting[0]
            need = seq.num_tokens
            if admitted and need > budget:
                break
            alloc = self.pool.allocate(seq.all_ids, use_prefix_cache=not seq.needs_prompt_logprobs)
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
                self._preempt(self.running[-1])
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

    def commit(self, batch: Batch, computed: list[Sequence]) -> None:
        """The forward wrote the K/V of every token of `computed` (before the new token is appended):
        mark them computed and, after a prefill, publish their full blocks to the prefix cache. Rows that
        failed are not in `computed`: their possibly half-written blocks are never shared."""
        for seq in computed:
            seq.num_computed = seq.num_tokens
            if batch.is_prefill:
                self.pool.register_full_blocks(seq.block_table, seq.all_ids, seq.num_computed)

    def free(self, seqs: list[Sequence]) -> None:
        """Remove finished sequences from the queues and release their blocks."""
        for seq in seqs:
            if not seq.finished:
                continue
            if seq in self.running:
                self.running.remove(seq)
            if seq in self.waiting:
                self.waiting.remove(seq)
            self.pool.release(seq.block_table)
