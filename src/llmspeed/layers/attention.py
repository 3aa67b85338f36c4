"""Attention over a paged KV cache.

Every forward pass builds one `AttnBatch` (positions, mask, cache slot maps) that all layers share, so
prefill, decode, ragged batches and prefix-cached prompts run through the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llmspeed import kernels


@dataclass
class AttnBatch:
    positions: torch.Tensor  # [B, T] int64: absolute position of each new token (pads: 0)
    mask: torch.Tensor | None  # [B, 1, T, S] bool: query t of row b may attend key s (None: every key)
    slot_mapping: torch.Tensor | None = None  # [B*T] int64: flat cache slot for each new token's K/V
    gather_idx: torch.Tensor | None = None  # [B, S] int64: flat cache slots of keys 0..S-1 per row
    kv_range: tuple[int, int] | None = None  # B == 1 with contiguous blocks: (first slot, S) -> a view, no gather
    causal: bool = False  # keys are exactly this call's tokens, query t sees keys 0..t: SDPA is_causal, no gather

    def to(self, device: torch.device) -> AttnBatch:
        """The same metadata with its tensors on `device` (one host-to-device copy per tensor; none on the CPU)."""
        if device.type == "cpu" and self.positions.device.type == "cpu":
            return self

        def mv(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return AttnBatch(positions=self.positions.to(device, non_blocking=True), mask=mv(self.mask),
                         slot_mapping=mv(self.slot_mapping), gather_idx=mv(self.gather_idx), kv_range=self.kv_range,
                         causal=self.causal)

    @staticmethod
    def no_cache(batch: int, seq_len: int, lengths: torch.Tensor | None = None,
                 device: torch.device | None = None) -> AttnBatch:
        """Causal self-attention over the given tokens only (right-padded rows when `lengths` is given)."""
        pos = torch.arange(seq_len, device=device).unsqueeze(0).expand(batch, seq_len)  # [B, T]
        if lengths is None:  # full rows: plain causal attention (SDPA skips the masked half)
            return AttnBatch(positions=pos, mask=None, causal=True)
        pos = torch.where(pos < lengths.unsqueeze(1), pos, torch.zeros_like(pos))
        return AttnBatch(positions=pos, mask=causal_mask(pos, seq_len))


def causal_mask(positions: torch.Tensor, num_keys: int) -> torch.Tensor:
    """Key s (position s in the row) is visible to a query at position p iff s <= p. [B, T] -> [B, 1, T, S]."""
    keys = torch.arange(num_keys, device=positions.device).view(1, 1, num_keys)  # [1, 1, S]
    return (keys <= positions.unsqueeze(-1)).unsqueeze(1)


def _paged_kernel_ok(q: torch.Tensor, ck: torch.Tensor) -> bool:
    # llmspeed's C++ kernels are CPU-only: other devices take the torch path below
    return q.device.type == "cpu" and q.dtype == torch.float32 and ck.dtype == torch.float32 and kernels.available()


def attend(
    q: torch.Tensor,  # [B, T, H, D]
    k: torch.Tensor,  # [B, T, Hkv, D] (new tokens)
    v: torch.Tensor,  # [B, T, Hkv, D]
    meta: AttnBatch,
    cache: tuple[torch.Tensor, torch.Tensor] | None,  # this layer's ([Hkv, slots, D], [Hkv, slots, D])
    scale: float,
) -> torch.Tensor:  # -> [B, T, H*D]
    B, T, H, D = q.shape
    Hkv = k.shape[2]
    if cache is not None:
        ck, cv = cache
        assert meta.slot_mapping is not None
        ck.index_copy_(1, meta.slot_mapping, k.reshape(B * T, Hkv, D).transpose(0, 1).to(ck.dtype))
        cv.index_copy_(1, meta.slot_mapping, v.reshape(B * T, Hkv, D).transpose(0, 1).to(cv.dtype))
        if T == 1 and meta.kv_range is None and _paged_kernel_ok(q, ck):
            # batched decode: llmspeed's kernel reads K/V in place through the slot table (no gather copy);
            # row b's keys are 0..position_b, so it attends to the first position_b + 1 listed slots
            assert meta.gather_idx is not None and meta.positions is not None
            n_valid = meta.positions.view(B, T)[:, 0] + 1  # [B]
            out = kernels.paged_decode_attention(q.reshape(B, H, D).contiguous(), ck, cv, meta.gather_idx, n_valid,
                                                 scale)  # [B, H, D]
            return out.reshape(B, 1, H * D)
        if meta.causal:  # a fresh prompt: its keys are the new tokens themselves (already written to the cache)
            kh, vh = k.transpose(1, 2), v.transpose(1, 2)  # [B, Hkv, T, D]
        elif meta.kv_range is not None:
            s0, S = meta.kv_range
            kh = ck[:, s0:s0 + S].unsqueeze(0)  # [1, Hkv, S, D], a view
            vh = cv[:, s0:s0 + S].unsqueeze(0)
        else:
            assert meta.gather_idx is not None
            S = meta.gather_idx.shape[1]
            idx = meta.gather_idx.view(-1)
            kh = ck.index_select(1, idx).view(Hkv, B, S, D).transpose(0, 1)  # [B, Hkv, S, D]
            vh = cv.index_select(1, idx).view(Hkv, B, S, D).transpose(0, 1)
    else:
        kh, vh = k.transpose(1, 2), v.transpose(1, 2)  # [B, Hkv, T, D]
    kh, vh = kh.to(q.dtype), vh.to(q.dtype)
    if T == 1:
        # decode: grouped-query attention without materialising repeated K/V
        G = H // Hkv
        qg = q.view(B, Hkv, G, D)  # [B, Hkv, G, D]
        scores = (qg @ kh.transpose(-1, -2)).float() * scale  # [B, Hkv, G, S]
        if meta.mask is not None:
            scores = scores.masked_fill(~meta.mask.view(B, 1, 1, -1), float("-inf"))
        probs = torch.softmax(scores, dim=-1).to(vh.dtype)
        return (probs @ vh).reshape(B, 1, H * D)  # [B, Hkv, G, D] -> [B, 1, H*D]
    if meta.causal:
        out = F.scaled_dot_product_attention(q.transpose(1, 2), kh, vh, is_causal=True, scale=scale,
                                             enable_gqa=H != Hkv)  # [B, H, T, D]
    else:
        out = F.scaled_dot_product_attention(q.transpose(1, 2), kh, vh, attn_mask=meta.mask, scale=scale,
                                             enable_gqa=H != Hkv)  # [B, H, T, D]
    return out.transpose(1, 2).reshape(B, T, H * D)  # [B, T, H*D]
