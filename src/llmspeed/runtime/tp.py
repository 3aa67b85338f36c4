"""The tensor-parallel step driver: rank 0 runs the engine, the other ranks follow its forwards.

Rank 0 owns everything that decides: the scheduler (admission, blocks, prefix cache, preemption), the sampler
and the output processing; its model is a `TPDriver`, which before each forward broadcasts the step's plan (the
packed input ids and the attention metadata the model runner built) to the other ranks. A follower
(`follow`) receives the plan, runs the same forward on its shard over its own paged KV cache (its KV heads
only, the same slots: rank 0's block tables address every rank's cache) and joins the collectives; the
vocabulary-parallel head all-gathers the logits, so rank 0 samples from the full distribution. No pickle: the
plan is a fixed int64 header plus tensors.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from llmspeed.layers.attention import AttnBatch
from llmspeed.layers.parallel import TPGroup

log = logging.getLogger(__name__)

HEADER = 20
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CMD_STOP, CMD_FORWARD = 0, 1
# header flags
F_KV, F_MASK, F_SLOT, F_GATHER, F_RANGE, F_CAUSAL, F_LAST = (1 << i for i in range(7))


@dataclass
class Plan:
    """One forward as the followers see it."""

    ids: torch.Tensor  # [B, T]
    meta: AttnBatch
    logits_index: torch.Tensor | None  # [B]
    kv_shape: tuple[int, int, int, int] | None  # rank 0's (layers, -, slots, -) + dtype index; None: no cache
    kv_dtype: torch.dtype


def _bcast(t: torch.Tensor, tp: TPGroup) -> torch.Tensor:
    dist.broadcast(t, src=0, group=tp.group)
    return t


def send_plan(tp: TPGroup, device: torch.device, ids: torch.Tensor, meta: AttnBatch,
              kv: list[tuple[torch.Tensor, torch.Tensor]] | None, logits_index: torch.Tensor | None) -> None:
    """Rank 0: broadcast one forward's inputs (header, then each present tensor in a fixed order)."""
    B, T = ids.shape
    h = torch.zeros(HEADER, dtype=torch.long)
    flags = 0
    h[0], h[1], h[2] = CMD_FORWARD, B, T
    if kv is not None:
        flags |= F_KV
        k0 = kv[0][0]  # [Hkv_local, slots, D]
        h[3], h[4], h[5] = len(kv), k0.shape[1], _DTYPES.index(k0.dtype)
    if meta.mask is not None:
        flags |= F_MASK
        h[6:10] = torch.tensor(meta.mask.shape)
    if meta.slot_mapping is not None:
        flags |= F_SLOT
        h[10] = meta.slot_mapping.numel()
    if meta.gather_idx is not None:
        flags |= F_GATHER
        h[11], h[12] = meta.gather_idx.shape
    if meta.kv_range is not None:
        flags |= F_RANGE
        h[13], h[14] = meta.kv_range
    if meta.causal:
        flags |= F_CAUSAL
    if logits_index is not None:
        flags |= F_LAST
    h[15] = flags
    _bcast(h.to(device), tp)
    _bcast(ids.to(device, torch.long).contiguous(), tp)
    _bcast(meta.positions.to(device, torch.long).contiguous(), tp)
    if meta.mask is not None:
        _bcast(meta.mask.to(device, torch.uint8).contiguous(), tp)
    if meta.slot_mapping is not None:
        _bcast(meta.slot_mapping.to(device, torch.long).contiguous(), tp)
    if meta.gather_idx is not None:
        _bcast(meta.gather_idx.to(device, torch.long).contiguous(), tp)
    if logits_index is not None:
        _bcast(logits_index.to(device, torch.long).contiguous(), tp)


def send_stop(tp: TPGroup, device: torch.device) -> None:
    h = torch.zeros(HEADER, dtype=torch.long, device=device)
    h[0] = CMD_STOP
    _bcast(h, tp)


def recv_plan(tp: TPGroup, device: torch.device) -> Plan | None:
    """A follower: the next forward's inputs, or None when rank 0 stopped the group."""
    h = _bcast(torch.zeros(HEADER, dtype=torch.long, device=device), tp).tolist()
    if h[0] == CMD_STOP:
        return None
    B, T, flags = h[1], h[2], h[15]

    def recv(*shape: int, dtype: torch.dtype = torch.long) -> torch.Tensor:
        return _bcast(torch.empty(*shape, dtype=dtype, device=device), tp)

    ids, pos = recv(B, T), recv(B, T)
    mask = recv(*h[6:10], dtype=torch.uint8).bool() if flags & F_MASK else None
    slot = recv(h[10]) if flags & F_SLOT else None
    gather = recv(h[11], h[12]) if flags & F_GATHER else None
    last = recv(B) if flags & F_LAST else None
    meta = AttnBatch(positions=pos, mask=mask, slot_mapping=slot, gather_idx=gather,
                     kv_range=(h[13], h[14]) if flags & F_RANGE else None, causal=bool(flags & F_CAUSAL))
    kv_shape = (h[3], 0, h[4], 0) if flags & F_KV else None
    return Plan(ids, meta, last, kv_shape, _DTYPES[h[5]])


class TPDriver(nn.Module):
    """Rank 0's model: broadcasts each forward's plan, then runs its own shard (the collectives join the ranks).

    Attribute lookups it does not have go to the shard (`llm.model.model.layers` keeps working). A lock keeps one
    forward at a time in flight: the engine thread and `LLM.logits` must not interleave their collectives.
    """

    def __init__(self, shard: nn.Module, tp: TPGroup, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.shard = shard
        self.tp = tp
        self.comm_device = torch.device(device)
        self._lock = threading.Lock()
        self.closed = False

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            shard = self.__dict__.get("_modules", {}).get("shard")
            if shard is None:
                raise
            return getattr(shard, name)

    def forward(self, input_ids: torch.Tensor, meta: AttnBatch, kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                logits_index: torch.Tensor | None = None) -> torch.Tensor:
        with self._lock:
            if self.closed:
                raise RuntimeError("the tensor-parallel group is closed")
            send_plan(self.tp, self.comm_device, input_ids, meta, kv, logits_index)
            return self.shard(input_ids, meta, kv, logits_index)

    def close(self) -> None:
        """Tell the followers to leave their loop (idempotent)."""
        with self._lock:
            if not self.closed:
                self.closed = True
                send_stop(self.tp, self.comm_device)


def follow(model: nn.Module, tp: TPGroup, device: torch.device | str = "cpu") -> int:
    """A follower rank's loop: run rank 0's forwards on this shard until it stops the group; returns the step count.

    A forward that raises here ends the process (its exception propagates): rank 0's next collective then fails
    with a closed connection and its rows fail with that error, rather than the ranks waiting on each other's
    mismatched collectives."""
    dev = torch.device(device)
    cfg = model.config  # type: ignore[union-attr]
    kv: list[tuple[torch.Tensor, torch.Tensor]] = []
    k = v = None
    steps = 0
    with torch.inference_mode():
        while (plan := recv_plan(tp, dev)) is not None:
            cache = None
            if plan.kv_shape is not None:
                L, _, slots, _ = plan.kv_shape
                want = (L, cfg.n_kv_heads, slots, cfg.head_dim)  # this rank's KV heads, rank 0's slots
                if k is None or tuple(k.shape) != want or k.dtype != plan.kv_dtype:
                    k = torch.zeros(want, dtype=plan.kv_dtype, device=dev)  # [L, Hkv_local, slots, D]
                    v = torch.zeros(want, dtype=plan.kv_dtype, device=dev)
                    kv = [(k[i], v[i]) for i in range(L)]
                    log.info("rank %d: KV cache of %d slots (%.1f MB)", tp.rank, slots, 2 * k.nbytes / 1e6)
                cache = kv
            model(plan.ids, plan.meta, cache, plan.logits_index)
            steps += 1
    return steps
