"""Agreement between an original (reference) model and an optimized one on the same tokens.

Per predicted token t: KL(p_orig(·|x<t) ‖ p_opt(·|x<t)) = Σ_v p_orig(v) (log p_orig(v) − log p_opt(v)), in nats,
and top-1 agreement = [argmax p_orig == argmax p_opt]. The tokens are exactly the predictions used for
perplexity (see perplexity.py's convention); mean and 99th percentile are over all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F


def kl_per_token(ref_logits: torch.Tensor, opt_logits: torch.Tensor) -> torch.Tensor:
    """[T, V], [T, V] -> [T] KL(softmax(ref) ‖ softmax(opt)) in nats (float32 math, float64 result)."""
    return kl_from_logprobs(F.log_softmax(ref_logits.float(), dim=-1), F.log_softmax(opt_logits.float(), dim=-1))


def kl_from_logprobs(lp_ref: torch.Tensor, lp_opt: torch.Tensor) -> torch.Tensor:
    """[T, V] log-probs each -> [T] KL(ref ‖ opt) (float64); exactly 0 when the inputs are equal."""
    return (lp_ref.exp() * (lp_ref - lp_opt)).sum(-1).double()  # [T]


def top1_agree(ref_logits: torch.Tensor, opt_logits: torch.Tensor) -> torch.Tensor:
    """[T, V], [T, V] -> [T] bool: same argmax token."""
    return ref_logits.argmax(-1) == opt_logits.argmax(-1)


@dataclass
class AgreementAccumulator:
    kls: list[torch.Tensor] = field(default_factory=list)
    agree: int = 0
    count: int = 0

    def add(self, ref_lp: torch.Tensor, opt_lp: torch.Tensor) -> None:
        """Log-probs of the PREDICTING positions only, [T-1, V] each (float32)."""
        self.kls.append(kl_from_logprobs(ref_lp, opt_lp))
        self.agree += int(top1_agree(ref_lp, opt_lp).sum())
        self.count += int(ref_lp.shape[0])

    def add_stats(self, kl: torch.Tensor, agree: int) -> None:
        """The same from precomputed per-token KL [T-1] and top-1 matches (data-parallel workers)."""
        self.kls.append(kl)
        self.agree += agree
        self.count += int(kl.numel())

    def report(self) -> dict[str, Any]:
        kl = torch.cat(self.kls) if self.kls else torch.zeros(0, dtype=torch.float64)  # [N]
        if kl.numel() == 0:
            return {"kl_mean": float("nan"), "kl_p99": float("nan"), "top1_agreement": float("nan"), "kl_tokens": 0}
        return {"kl_mean": float(kl.mean()), "kl_p99": float(torch.quantile(kl, 0.99)),
                "kl_max": float(kl.max()), "top1_agreement": self.agree / self.count, "kl_tokens": self.count}


def agreement(ref_llm: Any, opt_llm: Any, windows: Any) -> dict[str, Any]:
    """KL mean / p99 and top-1 agreement of `opt_llm` against `ref_llm` over TokenWindows."""
    acc = AgreementAccumulator()
    for w in windows.windows:
        ids = w.unsqueeze(0)  # [1, W]
        acc.add(F.log_softmax(ref_llm.logits(ids)[0, :-1], -1), F.log_softmax(opt_llm.logits(ids)[0, :-1], -1))
    return acc.report()
