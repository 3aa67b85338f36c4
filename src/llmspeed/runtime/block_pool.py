"""Block allocation with hashed prefix blocks (vLLM / nano-vllm style prefix caching).

A full block's hash chains the previous block's hash with its token ids, so equal hashes mean equal
prefixes. Freed blocks keep their hash until reused, so a later request with the same prefix
(a system prompt, an FAQ preamble) finds its KV still in the pool and skips that part of prefill.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None
    token_ids: tuple[int, ...] = ()


def chain_hash(prev: int | None, tokens: tuple[int, ...]) -> int:
    return hash((prev, tokens))


class BlockPool:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_cache: bool = True) -> None:
        self.block_size = block_size
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))  # LRU order
        self.by_hash: dict[int, int] = {}
        self.enable_prefix_cache = enable_prefix_cache
        self.prefix_query_tokens = 0
        self.prefix_hit_tokens = 0

    @property
    def num_free(self) -> int:
        return len(self.free)

    @property
    def num_used(self) -> int:
        return len(self.blocks) - len(self.free)

    def _take_free(self) -> int:
        bid, _ = self.free.popitem(last=False)
        blk = self.blocks[bid]
        if blk.hash is not None and self.by_hash.get(blk.hash) == bid:
            del self.by_hash[blk.hash]
        blk.hash, blk.token_ids, blk.ref_count = None, (), 1
        return bid

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def match_prefix(self, token_ids: list[int]) -> list[int]:
        """Cached blocks covering a prefix of token_ids (never the last token: it must be computed)."""
        if not self.enable_prefix_cache:
            return []
        bs, hits, h = self.block_size, [], None
        for i in range((len(token_ids) - 1) // bs):
            toks = tuple(token_ids[i * bs:(i + 1) * bs])
            h = chain_hash(h, toks)
            bid = self.by_hash.get(h)
            if bid is None or self.blocks[bid].token_ids != toks:
                break
            hits.append(bid)
        return hits

    def allocate(self, token_ids: list[int], use_prefix_cache: bool = True) -> tuple[list[int], int] | None:
        """Block table for a new sequence and how many of its tokens are already cached; None if no room.
        `use_prefix_cache=False`: compute every token (its blocks are still published for others)."""
        hits = self.match_prefix(token_ids) if use_prefix_cache else []
        need = self.blocks_needed(len(token_ids) + 1) - len(hits)  # +1: room for the first generated token
        revived = sum(1 for b in hits if self.blocks[b].ref_count == 0)
        if self.num_free - revived < need:
            return None
        for bid in hits:
            blk = self.blocks[bid]
            if blk.ref_count == 0:
                del self.free[bid]
            blk.ref_count += 1
        table = hits + [self._take_free() for _ in range(need)]
        self.prefix_query_tokens += len(token_ids)
        self.prefix_hit_tokens += len(hits) * self.block_size
        return table, len(hits) * self.block_size

    def ensure_capacity(self, table: list[int], num_tokens: int) -> bool:
        """Grow a block table to hold num_tokens; False (unchanged) when the pool is exhausted."""
        need = self.blocks_needed(num_tokens) - len(table)
        if need > self.num_free:
            return False
        table.extend(self._take_free() for _ in range(max(need, 0)))
        return True

    def register_full_blocks(self, table: list[int], token_ids: list[int], num_computed: int) -> None:
        """Publish the hashes of blocks whose KV is now fully computed, so later requests can reuse them."""
        if not self.enable_prefix_cache:
            return
        bs, h = self.block_size, None
        for i in range(num_computed // bs):
            toks = tuple(token_ids[i * bs:(i + 1) * bs])
            h = chain_hash(h, toks)
            blk = self.blocks[table[i]]
            if blk.hash is None:
                blk.hash, blk.token_ids = h, toks
                self.by_hash.setdefault(h, blk.block_id)

    def release(self, table: list[int]) -> None:
        for bid in reversed(table):  # tail blocks first: they are the least likely to be shared
            blk = self.blocks[bid]
            blk.ref_count -= 1
            if blk.ref_count == 0:
                if blk.hash is None:
                    self.free[bid] = None
                    self.free.move_to_end(bid, last=False)  # unhashed blocks are reused first
                else:
                    self.free[bid] = None
        table.clear()
