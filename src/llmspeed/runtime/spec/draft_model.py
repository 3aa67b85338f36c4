"""A draft model as proposer: a smaller model sharing the target's tokenizer (e.g. a distilled student), with its
own paged KV cache and block pool. Per request it keeps a block table and how many of the request's tokens its
cache holds; each step it first catches up on the tokens it has not seen (the last accepted ones), then proposes
k tokens one at a time, all requests of the step batched. After verification its cache is cut back to the
tokens the target accepted (its stale slots are simply overwritten later)."""

from __future__ import annotations

import logging

import torch
from torch import nn

from llmspeed.models.config import ModelConfig
from llmspeed.runtime.block_pool import BlockPool
from llmspeed.runtime.kv_cache import KVCache
from llmspeed.runtime.model_runner import ModelRunner
from llmspeed.runtime.scheduler import Batch
from llmspeed.runtime.sequence import Sequence
from llmspeed.runtime.spec.rejection import processed_probs

log = logging.getLogger(__name__)


class _DraftView:
    """What ModelRunner.build_inputs reads, for the draft's copy of one request."""

    def __init__(self) -> None:
        self.block_table: list[int] = []
        self.num_computed = 0
        self.ids: list[int] = []
        self.draft_ids: list[int] = []

    @property
    def all_ids(self) -> list[int]:
        return self.ids

    @property
    def num_tokens(self) -> int:
        return len(self.ids)


class DraftModelProposer:
    def __init__(self, model: nn.Module, num_blocks: int, block_size: int) -> None:
        cfg: ModelConfig = model.config  # type: ignore[assignment]
        dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
        self.model = model
        self.max_position = cfg.max_position
        self.kv = KVCache(cfg.n_layers, cfg.n_kv_heads, cfg.head_dim, num_blocks, block_size,
                          dtype=dtype if dtype in (torch.float32, torch.bfloat16, torch.float16) else torch.float32)
        self.pool = BlockPool(num_blocks, block_size, enable_prefix_cache=False)
        self.runner = ModelRunner(model, self.kv)
        self.views: dict[str, _DraftView] = {}

    @torch.inference_mode()
    def propose(self, seqs: list[Sequence], ks: list[int]) -> None:
        """Set `draft_ids` (and, for sampled requests, `draft_probs` [k, V]) of each request with k > 0."""
        rows: list[tuple[Sequence, _DraftView, int]] = []
        for seq, k in zip(seqs, ks, strict=True):
            if k <= 0:
                continue
            k = min(k, self.max_position - seq.num_tokens)
            view = self.views.setdefault(seq.seq_id, _DraftView())
            self.rollback(seq)  # a step whose drafts were dropped (no room, a failure) left unverified ones behind
            view.ids = seq.all_ids
            view.num_computed = min(view.num_computed, view.num_tokens - 1)
            if k <= 0 or not self.pool.ensure_capacity(view.block_table, view.num_tokens + k):
                continue
            rows.append((seq, view, k))
        probs: dict[str, list[torch.Tensor]] = {s.seq_id: [] for s, _, _ in rows}
        for j in range(max((k for _, _, k in rows), default=0)):
            live = [(s, v) for s, v, k in rows if j < k]
            logits = self.runner.forward(Batch([v for _, v in live], is_prefill=False))  # type: ignore[misc]  # [B, V]
            for i, (s, v) in enumerate(live):
                v.num_computed = v.num_tokens
                p = s.params
                if p.temperature == 0.0:
                    tok = int(logits[i].argmax())
                else:
                    q = processed_probs(logits[i:i + 1], p.temperature, p.top_k, p.top_p)[0]  # [V]
                    tok = int(torch.multinomial(q, 1, generator=s.generator))
                    probs[s.seq_id].append(q)
                s.draft_ids.append(tok)
                v.ids = [*v.ids, tok]
        for s, _, _ in rows:
            if probs[s.seq_id]:
                s.draft_probs = torch.stack(probs[s.seq_id])  # [k, V]

    def rollback(self, seq: Sequence) -> None:
        """After verification: the draft's cache is valid for the request's tokens it saw that were accepted."""
        view = self.views.get(seq.seq_id)
        if view is None:
            return
        valid = 0
        for a, b in zip(view.ids, seq.all_ids, strict=False):
            if a != b:
                break
            valid += 1
        view.num_computed = min(view.num_computed, valid)
        view.ids = view.ids[:valid]

    def release(self, seq: Sequence) -> None:
        view = self.views.pop(seq.seq_id, None)
        if view is not None:
            self.pool.release(view.block_table)
