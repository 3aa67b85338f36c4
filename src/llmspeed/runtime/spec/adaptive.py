"""Per-request k: grow after full acceptance, shrink to what was accepted, and pause drafting (exponential
back-off) after a pass that accepted nothing, so text the proposer cannot guess runs at plain decode speed."""

from __future__ import annotations

from dataclasses import dataclass

MAX_PAUSE = 64  # steps: the longest pause after repeated rejections


@dataclass
class AdaptiveK:
    k_max: int
    adaptive: bool = True
    k: int = 0  # current k (0 -> k_max on first use)
    pause: int = 0  # steps left without drafting
    backoff: int = 0  # length of the last pause

    def __post_init__(self) -> None:
        if self.k <= 0:
            self.k = self.k_max

    def next_k(self) -> int:
        """How many tokens to propose this step (0: skip drafting)."""
        if not self.adaptive:
            return self.k_max
        if self.pause > 0:
            self.pause -= 1
            return 0
        return self.k

    def update(self, proposed: int, accepted: int) -> None:
        if proposed <= 0:
            return
        if not self.adaptive:
            return
        if accepted == 0:
            self.backoff = min(max(1, 2 * self.backoff), MAX_PAUSE)
            self.pause = self.backoff
            self.k = max(1, self.k // 2)
        elif accepted == proposed:
            self.backoff = 0
            self.k = min(self.k_max, 2 * self.k)
        else:
            self.backoff = 0
            self.k = min(self.k_max, max(2, accepted + 1))
