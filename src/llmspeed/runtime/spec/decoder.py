"""The speculative step: propose, verify all rows in one batched pass, accept, roll back the rejected slots.

A decode step where at least one running request has proposals becomes a verify step: every row feeds its last
token plus its drafts (0..k) through the target's paged KV cache in one forward, the same ragged path prefill
with a prefix-cache hit takes, so requests with and without drafts share the step. Rows without drafts are
sampled exactly as in a plain step. A step where nobody has proposals is a plain decode step (the compiled
decode graph where the recipe has one).

Rollback: the K/V written for rejected drafts is zeroed, blocks taken only for them go back to the pool in the
order they were taken, and no prefix hash is published for them: the cache, block table and prefix index look
as if the rejected tokens were never written.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from llmspeed.runtime.block_pool import BlockPool
from llmspeed.runtime.kv_cache import KVCache
from llmspeed.runtime.model_runner import ModelRunner, RowResult
from llmspeed.runtime.plans import running_phase_modules
from llmspeed.runtime.scheduler import Batch
from llmspeed.runtime.sequence import Sequence
from llmspeed.runtime.spec.adaptive import AdaptiveK
from llmspeed.runtime.spec.config import DraftConfig
from llmspeed.runtime.spec.draft_model import DraftModelProposer
from llmspeed.runtime.spec.ngram import propose_ngram
from llmspeed.runtime.spec.rejection import accept_greedy, accept_sampled, processed_probs

log = logging.getLogger(__name__)

SpecResult = list[int] | Exception  # per row: the emitted tokens (accepted drafts + one), or why the row failed


def kernel_rows(model: nn.Module) -> int:
    """Rows up to which every quantized linear of `model` runs its decode kernel (beyond: its prefill path, which
    dequantizes the weight, several decode steps' worth of time on a small model); large for float models."""
    rows = [m.plan.small_m for m in running_phase_modules(model) if m.plan.prefill != "kernel"]
    return max(min(rows, default=1 << 30), 2)


class SpecDecoder:
    def __init__(self, config: DraftConfig, runner: ModelRunner, kv: KVCache, pool: BlockPool, max_model_len: int,
                 draft_model: nn.Module | None = None) -> None:
        self.config = config
        self.runner = runner
        self.kv = kv
        self.pool = pool
        self.max_model_len = max_model_len
        self.k = min(config.k, kernel_rows(runner.model) - 1) if config.k > 1 else config.k
        if self.k < config.k:
            log.info("draft k %d -> %d: a verify pass of up to k+1 rows stays on the low-bit decode kernels",
                     config.k, self.k)
        self.draft: DraftModelProposer | None = None
        if config.kind == "model":
            if draft_model is None:
                raise ValueError("--draft names a draft model but none was loaded")
            self.draft = DraftModelProposer(draft_model, kv.num_blocks, kv.block_size)
        self.num_draft_tokens = 0
        self.num_accepted_tokens = 0
        self.num_verify_rows = 0  # row-verifications with at least one draft
        self._table_len: dict[str, int] = {}  # block-table length before drafting, per row of this step
        self._proposed: dict[str, int] = {}

    # -- proposals ------------------------------------------------------------------------------------
    def _budget(self, seq: Sequence) -> int:
        """Most drafts worth verifying: never past max_new_tokens or the context window."""
        if seq.params.logprobs is not None:
            return 0  # its logprobs come with plain sampling, one token per step
        st = seq.spec_state
        if not isinstance(st, AdaptiveK):
            st = seq.spec_state = AdaptiveK(self.k, self.config.adaptive)
        k = st.next_k()
        left = min(seq.params.max_new_tokens - len(seq.output_ids), self.max_model_len - seq.num_tokens) - 1
        return max(0, min(k, left))

    def propose(self, batch: Batch) -> bool:
        """Give the rows of a decode batch their proposals; True when any row has one (then call `execute`)."""
        seqs = batch.seqs
        ks = [self._budget(s) for s in seqs]
        for s in seqs:
            s.draft_ids, s.draft_probs = [], None
        if not any(ks):
            return False
        if self.draft is not None:
            try:
                self.draft.propose(seqs, ks)
            except Exception as e:  # a failing draft model costs speed, never a request
                log.warning("draft model failed (%s: %s): decoding without drafts this step", type(e).__name__, e)
                for s in seqs:
                    s.draft_ids, s.draft_probs = [], None
        else:
            for s, k in zip(seqs, ks, strict=True):
                if k > 0:
                    s.draft_ids = propose_ngram(s.all_ids, k, self.config.ngram_max, self.config.ngram_min)
        any_draft = False
        for s in seqs:
            if not s.draft_ids:
                continue
            self._table_len[s.seq_id] = len(s.block_table)
            if not self.pool.ensure_capacity(s.block_table, s.num_tokens + len(s.draft_ids)):
                s.draft_ids, s.draft_probs = [], None  # no room for drafts: never preempt anyone for them
                continue
            self._proposed[s.seq_id] = len(s.draft_ids)
            any_draft = True
        return any_draft

    # -- verification ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def execute(self, batch: Batch) -> list[SpecResult]:
        """One forward over every row's last token + drafts; per row the emitted tokens or its exception."""
        try:
            logits = self.runner.forward_all(batch)  # [B, T, V]
        except Exception as e:
            if len(batch.seqs) == 1:
                return [e]
            log.warning("batched verify of %d rows failed (%s: %s): rows one by one", len(batch.seqs),
                        type(e).__name__, e)
            return [self.execute(Batch([s], False))[0] for s in batch.seqs]
        out: list[SpecResult] = []
        for b, seq in enumerate(batch.seqs):
            try:
                out.append(self._accept(seq, logits[b, : len(seq.draft_ids) + 1]))  # [k+1, V]
            except Exception as e:
                log.warning("accepting drafts of %s failed: %s: %s", seq.seq_id, type(e).__name__, e)
                out.append(e)
        return out

    @staticmethod
    def _accept(seq: Sequence, logits: torch.Tensor) -> list[int]:
        draft, p = seq.draft_ids, seq.params
        if not draft:  # a plain row in a verify step: sampled exactly as a plain step samples it
            r: RowResult = ModelRunner._with_logprobs([seq], logits[:1], ModelRunner.sample([seq], logits[:1]))[0]
            if isinstance(r, Exception):
                raise r
            return [r]
        if p.temperature == 0.0:
            return accept_greedy(logits, draft)
        probs = processed_probs(logits, p.temperature, p.top_k, p.top_p)  # [k+1, V]
        return accept_sampled(probs, draft, seq.draft_probs, seq.generator)

    # -- after the tokens are appended -----------------------------------------------------------------
    def finish_row(self, seq: Sequence, emitted: int) -> None:
        """Count, adapt k, and roll back what the verify pass wrote past the accepted tokens. `emitted`: tokens
        appended to the request by this step (fewer than returned when it finished on EOS / stop / length)."""
        proposed = self._proposed.pop(seq.seq_id, 0)
        table_len = self._table_len.pop(seq.seq_id, None)
        drafts, seq.draft_ids, seq.draft_probs = len(seq.draft_ids), [], None
        if table_len is None:
            return
        accepted = max(0, min(emitted - 1, proposed))
        if proposed:
            self.num_draft_tokens += proposed
            self.num_accepted_tokens += accepted
            self.num_verify_rows += 1
            seq.num_draft_tokens += proposed
            seq.num_accepted_tokens += accepted
            seq.num_verifies += 1
            if isinstance(seq.spec_state, AdaptiveK):
                seq.spec_state.update(proposed, accepted)
        if self.draft is not None:
            self.draft.rollback(seq)
        if seq.finished:
            return  # its blocks are released whole
        self.rollback(seq, first=seq.num_computed, end=seq.num_computed - accepted + drafts, table_len=table_len)

    def rollback(self, seq: Sequence, first: int, end: int, table_len: int) -> None:
        """Zero the K/V of positions first..end-1 (rejected drafts) and give back blocks taken only for them."""
        bs = self.kv.block_size
        if end > first:
            slots = torch.tensor(self.kv.slots_for(seq.block_table, first, end))
            self.kv.k.index_fill_(2, slots, 0.0)  # [L, Hkv, slots, D]
            self.kv.v.index_fill_(2, slots, 0.0)
        keep = max(table_len, self.pool.blocks_needed(seq.num_computed))
        if len(seq.block_table) > keep:
            tail = seq.block_table[keep:]
            del seq.block_table[keep:]
            self.pool.release(tail)
        assert len(seq.block_table) * bs >= seq.num_computed

    def forget(self, seqs: list[Sequence]) -> None:
        """Finished requests: drop their per-step and draft-model state."""
        for s in seqs:
            self._proposed.pop(s.seq_id, None)
            self._table_len.pop(s.seq_id, None)
            if self.draft is not None and s.finished:
                self.draft.release(s)
