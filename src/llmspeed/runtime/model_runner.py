"""The model runner: packs a scheduled batch into tensors, runs the forward over the paged KV cache
(eager, or the compiled decode step when the recipe has `compile`) and samples one token per row.

Failures stay with the row that caused them: if the batched forward raises, the rows are run one by
one and only those that still raise fail; if sampling raises, rows are sampled one by one and only
the failing rows fail. `execute` returns, per row, either the sampled token id or that row's exception.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from llmspeed.layers.attention import AttnBatch, causal_mask
from llmspeed.layers.sampler import sample_batch
from llmspeed.runtime.compiled import CompiledDecode
from llmspeed.runtime.kv_cache import KVCache
from llmspeed.runtime.logprobs import logprobs_of, prompt_logprobs
from llmspeed.runtime.scheduler import Batch
from llmspeed.runtime.sequence import Sequence

log = logging.getLogger(__name__)

RowResult = int | Exception  # a sampled token id, or why this row failed
LogitsHook = Callable[[Batch, torch.Tensor], None]


class ModelRunner:
    def __init__(self, model: nn.Module, kv: KVCache, decode_fn: CompiledDecode | None = None) -> None:
        self.model = model
        self.kv = kv
        self.decode_fn = decode_fn  # the compiled decode step when the recipe has `compile`, else None

    # -- inputs -------------------------------------------------------------------------------------
    def build_inputs(self, seqs: list[Sequence]) -> tuple[torch.Tensor, AttnBatch, torch.Tensor]:
        """(ids [B, T], attention metadata, index of each row's last new token [B])."""
        B = len(seqs)
        news = [s.all_ids[s.num_computed:] + s.draft_ids for s in seqs]  # drafts: verified after the last token
        T = max(len(n) for n in news)
        lens = [s.num_tokens + len(s.draft_ids) for s in seqs]
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
            slots = self.kv.slots_for(s.block_table, 0, lens[b])
            slot_map[b, :n] = torch.tensor(slots[start:])
            gather[b, : lens[b]] = torch.tensor(slots)
        uniform_decode = T == 1 and min(lens) == S  # every row attends to all S keys: no mask needed
        # fresh equal-length prompts (no cached prefix, no padding): plain causal attention over the new tokens
        fresh = T > 1 and all(s.num_computed == 0 and len(n) == T for s, n in zip(seqs, news, strict=True))
        meta = AttnBatch(positions=pos, mask=None if uniform_decode or fresh else causal_mask(pos, S),
                         slot_mapping=slot_map.view(-1), gather_idx=gather, causal=fresh)
        last = torch.tensor([len(n) - 1 for n in news])
        return ids, meta, last

    # -- forward + sampling -------------------------------------------------------------------------
    def forward(self, batch: Batch) -> torch.Tensor:
        """[B, V] logits of each row's last new token; writes the new tokens' K/V into the cache. A prefill
        row that asked for prompt logprobs gets them from this same forward (`Sequence.prompt_logprobs`)."""
        ids, meta, last = self.build_inputs(batch.seqs)  # packed on the host
        dev = self.kv.k.device
        if dev.type != "cpu":  # one copy per tensor to the model's device (runtime/device.py)
            ids, meta, last = ids.to(dev, non_blocking=True), meta.to(dev), last.to(dev, non_blocking=True)
        if self.decode_fn is not None and not batch.is_prefill and self.decode_fn.supports(len(batch.seqs)):
            return self.decode_fn(ids, meta, self.kv.layers, self.kv.scratch_slot)  # [B, V]
        if not (batch.is_prefill and any(s.needs_prompt_logprobs for s in batch.seqs)):
            return self.model(ids, meta, self.kv.layers, logits_index=last)  # [B, V]
        full = self.model(ids, meta, self.kv.layers)  # [B, T, V]: every position, for the prompt logprobs
        for b, s in enumerate(batch.seqs):
            if s.needs_prompt_logprobs:  # its prefill started at token 0 (no cached prefix): row b is the prompt
                n = int(last[b]) + 1
                s.prompt_logprobs = prompt_logprobs(full[b, :n], ids[b, :n], s.params.prompt_logprobs or 0)
        return full[torch.arange(len(batch.seqs), device=full.device), last]  # [B, V]: what the sampler sees

    def forward_all(self, batch: Batch) -> torch.Tensor:
        """[B, T, V] logits of every new token of each row (a verify pass: last token + drafts); eager path."""
        ids, meta, _last = self.build_inputs(batch.seqs)
        return self.model(ids, meta, self.kv.layers)  # [B, T, V]

    @staticmethod
    def sample(seqs: list[Sequence], logits: torch.Tensor) -> list[RowResult]:
        """One token per row of `logits` [B, V]; a row whose sampling raises gets its exception instead."""
        ps = [s.params for s in seqs]
        gens = [s.generator for s in seqs]
        try:
            return list(sample_batch(logits, [p.temperature for p in ps], [p.top_k for p in ps],
                                     [p.top_p for p in ps], gens))
        except Exception:
            log.warning("batched sampling failed: sampling the %d rows one by one", len(seqs), exc_info=True)
        out: list[RowResult] = []
        for i, p in enumerate(ps):
            try:
                out.append(sample_batch(logits[i:i + 1], [p.temperature], [p.top_k], [p.top_p], [gens[i]])[0])
            except Exception as e:
                log.warning("sampling %s failed: %s: %s", seqs[i].seq_id, type(e).__name__, e)
                out.append(e)
        return out

    @torch.inference_mode()
    def execute(self, batch: Batch, on_logits: LogitsHook | None = None) -> list[RowResult]:
        """Forward + sampling for `batch`; per row a token id or the exception that failed that row only."""
        try:
            logits = self.forward(batch)  # [B, V]
        except Exception as e:
            if len(batch.seqs) == 1:
                log.warning("forward of %s failed: %s: %s", batch.seqs[0].seq_id, type(e).__name__, e)
                return [e]
            log.warning("batched forward of %d rows failed (%s: %s): retrying them one by one", len(batch.seqs),
                        type(e).__name__, e)
            return self._execute_one_by_one(batch, on_logits)
        if on_logits is not None:
            on_logits(batch, logits)
        return self._with_logprobs(batch.seqs, logits, self.sample(batch.seqs, logits))

    @staticmethod
    def _with_logprobs(seqs: list[Sequence], logits: torch.Tensor, results: list[RowResult]) -> list[RowResult]:
        """Rows that asked for `logprobs` keep their sampled token's logprob (and top alternatives) from the
        logits [B, V] the sampler just read."""
        for i, (s, r) in enumerate(zip(seqs, results, strict=True)):
            if s.params.logprobs is not None and not isinstance(r, Exception):
                s.output_logprobs.extend(logprobs_of(logits[i:i + 1], torch.tensor([r]), s.params.logprobs))
        return results

    def _execute_one_by_one(self, batch: Batch, on_logits: LogitsHook | None) -> list[RowResult]:
        """Isolate the rows that break the forward: each row alone (its K/V slots are rewritten)."""
        out: list[RowResult] = []
        for seq in batch.seqs:
            one = Batch([seq], batch.is_prefill)
            try:
                logits = self.forward(one)  # [1, V]
            except Exception as e:
                log.warning("forward of %s failed: %s: %s", seq.seq_id, type(e).__name__, e)
                out.append(e)
                continue
            if on_logits is not None:
                on_logits(one, logits)
            out.extend(self._with_logprobs([seq], logits, self.sample([seq], logits)))
        return out
