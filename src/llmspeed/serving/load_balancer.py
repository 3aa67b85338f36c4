"""Replica choice: round-robin, least-connections, and prefix affinity with consistent hashing + bounded loads.

Prefix affinity sends requests that share a prompt prefix to the same replica (its prefix cache then
skips their prefill). Every chat request starts with the same template and often the same system
prompt, so hashing the start of the prompt would pin all traffic to one replica: the key is taken from
the blocks *beyond* the longest common prefix of recent requests. Loads are bounded (Mirrokni et al.,
"Consistent Hashing with Bounded Loads"): a replica holding more than ceil((1+eps) * mean) in-flight
requests takes no more affinity traffic; the walk continues clockwise on the ring.

With the model's tokenizer (`tokenize`), blocks are `block_tokens` token ids of the prompt exactly as the
engine sees it (chat template applied), i.e. the engine's KV blocks; without one they are `block_chars`
characters of the rendered prompt (one token is ~4 characters of English).
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


def _h(data: str) -> int:
    return int.from_bytes(hashlib.blake2b(data.encode(), digest_size=8).digest(), "big")


def prompt_text(body: dict[str, Any]) -> str:
    """What the prompt will look like to the model, well enough for prefix matching."""
    msgs = body.get("messages")
    if isinstance(msgs, list):
        return "".join(f"<{m.get('role')}>{m.get('content')}\n" for m in msgs if isinstance(m, dict))
    p = body.get("prompt")
    if isinstance(p, list) and p and isinstance(p[0], (str, list)):
        p = p[0]  # several prompts: the first one decides
    if isinstance(p, list):  # token ids
        return " ".join(map(str, p))
    return p if isinstance(p, str) else ""


def _lcp(a: Sequence[Any], b: Sequence[Any]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass(frozen=True)
class AffinityConfig:
    block_chars: int = 64  # one "block" of the prompt (~16 tokens) when no tokenizer is available
    block_tokens: int = 16  # the engine's KV block size
    key_blocks: int = 2  # blocks beyond the shared prefix that form the key
    window: int = 32  # recent prompts whose common prefix counts as "shared by all"
    epsilon: float = 0.25  # bounded loads: at most ceil((1+eps) * mean) in flight per replica
    vnodes: int = 64  # virtual nodes per replica on the ring

    def __post_init__(self) -> None:
        if self.block_chars <= 0 or self.block_tokens <= 0 or self.key_blocks <= 0 or self.window < 2 or self.vnodes <= 0:
            raise ValueError("block_chars, key_blocks, vnodes must be > 0 and window >= 2")
        if self.epsilon < 0:
            raise ValueError(f"epsilon must be >= 0, got {self.epsilon}")


class Balancer:
    """`choose(candidates, loads, body)` -> replica index; `loads` maps index -> in-flight requests."""

    def __init__(self, policy: str, num_replicas: int, affinity: AffinityConfig | None = None,
                 tokenize: Callable[[dict[str, Any]], list[int]] | None = None) -> None:
        if policy not in ("round-robin", "least-conn", "prefix-affinity"):
            raise ValueError(f"unknown load-balancing policy {policy!r}")
        self.policy = policy
        self.cfg = affinity or AffinityConfig()
        self._rr = itertools.count()
        self.tokenize = tokenize
        self._recent: deque[Sequence[Any]] = deque(maxlen=self.cfg.window)
        ring = sorted((_h(f"replica-{r}-{v}"), r) for r in range(num_replicas) for v in range(self.cfg.vnodes))
        self._ring_keys = [k for k, _ in ring]
        self._ring_nodes = [r for _, r in ring]

    def choose(self, candidates: list[int], loads: dict[int, int], body: dict[str, Any] | None = None) -> int:
        if not candidates:
            raise LookupError("no healthy replica")
        if self.policy == "round-robin":
            return candidates[next(self._rr) % len(candidates)]
        if self.policy == "least-conn":
            return self._least(candidates, loads)
        return self._affinity(candidates, loads, self.units(body or {}))

    def units(self, body: dict[str, Any]) -> Sequence[Any]:
        """Token ids of the prompt when a tokenizer is set (and the body is valid), else its text."""
        if self.tokenize is not None:
            try:
                return self.tokenize(body)
            except Exception:  # a malformed request: the replica will answer it with a 400 anyway
                pass
        return prompt_text(body)

    def _block(self, units: Sequence[Any]) -> int:
        return self.cfg.block_chars if isinstance(units, str) else self.cfg.block_tokens

    def _least(self, candidates: list[int], loads: dict[int, int]) -> int:
        start = next(self._rr)
        order = candidates[start % len(candidates):] + candidates[:start % len(candidates)]
        return min(order, key=lambda r: loads.get(r, 0))

    def shared_prefix_len(self, units: Sequence[Any]) -> int:
        """Units (chars or tokens) of the prompt shared by all recent prompts, block-aligned."""
        shared = len(units)
        for other in self._recent:
            if isinstance(other, str) == isinstance(units, str):
                shared = min(shared, _lcp(units, other))
        if not self._recent:
            shared = 0
        return shared - shared % self._block(units)

    def affinity_key(self, units: Sequence[Any]) -> str:
        start = self.shared_prefix_len(units)
        self._recent.append(units)
        key = units[start:start + self.cfg.key_blocks * self._block(units)]
        return key if isinstance(key, str) else ",".join(map(str, key))

    def _affinity(self, candidates: list[int], loads: dict[int, int], units: Sequence[Any]) -> int:
        key = self.affinity_key(units)
        total = sum(loads.get(r, 0) for r in candidates) + 1
        cap = math.ceil((1 + self.cfg.epsilon) * total / len(candidates))
        allowed = set(candidates)
        i = bisect.bisect(self._ring_keys, _h(key))
        n = len(self._ring_keys)
        for j in range(n):
            r = self._ring_nodes[(i + j) % n]
            if r in allowed and loads.get(r, 0) + 1 <= cap:
                return r
        return self._least(candidates, loads)


def chat_tokenizer(model: str) -> Callable[[dict[str, Any]], list[int]] | None:
    """The model's tokenizer as `body -> prompt token ids` (chat template applied), loaded without the
    weights; None (character blocks) when the model's tokenizer cannot be found."""
    from llmspeed.models.spec import model_dir, parse_model_spec
    from llmspeed.models.tokenizer import Tokenizer

    try:
        tok = Tokenizer.from_dir(model_dir(parse_model_spec(model)))
    except Exception as e:
        import logging

        logging.getLogger(__name__).warning("prefix affinity on character blocks: no tokenizer for %s (%s)", model, e)
        return None

    def tokenize(body: dict[str, Any]) -> list[int]:
        msgs = body.get("messages")
        if isinstance(msgs, list):
            norm = [{"role": "system" if m["role"] == "developer" else m["role"],
                     "content": m["content"] if isinstance(m["content"], str)
                     else "".join(p["text"] for p in m["content"])} for m in msgs]
            return tok.encode(tok.apply_chat_template(norm))
        p = body["prompt"]
        if isinstance(p, list) and p and isinstance(p[0], (str, list)):
            p = p[0]  # several prompts: the first one decides
        return list(p) if isinstance(p, list) else tok.encode(p)  # token ids are used as they are

    return tokenize
