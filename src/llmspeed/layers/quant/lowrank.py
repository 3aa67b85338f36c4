"""Low-rank linear: y = up(down(x)), two thinner Linears from a truncated SVD (compress/lowrank/svd.py makes them)."""

from __future__ import annotations

import torch
from torch import nn


class LowRankLinear(nn.Module):
    """y = up(down(x)): [.., in] -> [.., r] -> [.., out]."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = False,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.up = nn.Linear(rank, out_features, bias=bias, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [.., in] -> [.., out]
        return self.up(self.down(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"

    @classmethod
    def from_linear(cls, lin: nn.Linear, rank: int) -> LowRankLinear:
        """Truncated-SVD factorization of `lin` at `rank` (any rank <= min(in, out); no FLOP check here)."""
        w = lin.weight.data
        U, S, Vh = torch.linalg.svd(w.double(), full_matrices=False)  # [out, k], [k], [k, in]
        root = S[:rank].sqrt()  # [r]
        new = cls(lin.in_features, lin.out_features, rank, bias=lin.bias is not None, dtype=w.dtype)
        new.down.weight.data.copy_(root.unsqueeze(1) * Vh[:rank])  # [r, in]
        new.up.weight.data.copy_(U[:, :rank] * root.unsqueeze(0))  # [out, r]
        if lin.bias is not None:
            new.up.bias.data.copy_(lin.bias.data)
        return new
