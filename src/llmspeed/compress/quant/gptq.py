"""`int4-g32[-asym|-sym]-gptq`: GPTQ error-compensating rounding into the int4 format (Frantar et al., 2022).

Per Linear with weight W [N, K] and calibration inputs X [tokens, K]: H = 2 XᵀX / tokens (+ 1% mean-diagonal
damping). Columns are quantized left to right; each column's rounding error, scaled by the inverse Hessian's
Cholesky factor, is pushed onto the columns not yet quantized, so the layer output X Wᵀ is preserved better
than by round-to-nearest. Group scales are chosen from the already-updated weights when a group starts.
Hessians come from one pass of the original model over the calibration windows (not layer-sequential).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from llmspeed.compress.api import StepReport, iter_linears, register_step, set_module
from llmspeed.compress.quant.int4 import GRID_PATTERN, Int4Config, check_groups, restore_int4
from llmspeed.layers.quant.formats import INT4_GROUPS, Int4Groups, int4_codes, int4_params
from llmspeed.layers.quant.int4 import Int4Linear

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GPTQConfig:
    group_size: int = 32
    symmetric: bool = False
    damp: float = 0.01
    block: int = 128
    skip: tuple[str, ...] = ("lm_head",)

    def __post_init__(self) -> None:
        if self.group_size not in INT4_GROUPS:
            raise ValueError(f"group_size must be 32, 64 or 128, got {self.group_size}")
        if not 0 < self.damp < 1:
            raise ValueError(f"damp must be in (0, 1), got {self.damp}")
        if self.block % self.group_size:
            raise ValueError("block must be a multiple of group_size")

    @property
    def token(self) -> str:  # the explicit form a saved recipe records
        return f"{self.int4.token}-gptq"

    @property
    def int4(self) -> Int4Config:
        return Int4Config(self.group_size, self.symmetric, self.skip)


def gptq_quantize(w: torch.Tensor, gram: torch.Tensor, n_tokens: int, cfg: GPTQConfig) -> Int4Groups:
    """W [N, K], Σ xxᵀ [K, K] over n_tokens -> int4 groups minimising ‖X Wᵀ - X Ŵᵀ‖ column by column."""
    W = w.detach().double().clone()  # [N, K]
    N, K = W.shape
    g = cfg.group_size
    H = 2.0 * gram.double() / max(n_tokens, 1)  # [K, K]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += torch.eye(K, dtype=H.dtype) * cfg.damp * torch.diag(H).mean()
    L = torch.linalg.cholesky(H)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)  # [K, K] upper factor of H^-1
    codes = torch.zeros(N, K, dtype=torch.int32)
    scales = torch.zeros(N, K // g)
    mins = torch.zeros(N, K // g)
    for i1 in range(0, K, cfg.block):
        i2 = min(i1 + cfg.block, K)
        W1 = W[:, i1:i2].clone()  # [N, b]
        Err = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if col % g == 0:  # a new group: its grid comes from the error-updated weights
                s, z = int4_params(W1[:, i:i + g].float(), g, cfg.symmetric)  # [N, 1]
                scales[:, col // g], mins[:, col // g] = s[:, 0], z[:, 0]
            s, z = scales[:, col // g:col // g + 1], mins[:, col // g:col // g + 1]
            w_col = W1[:, i:i + 1]  # [N, 1]
            u = int4_codes(w_col.float(), s, z, 1)  # [N, 1]
            codes[:, col] = u[:, 0]
            q_col = u.double() * s.double() + z.double()
            err = (w_col - q_col) / Hinv1[i, i]  # [N, 1]
            W1[:, i:] -= err @ Hinv1[i:i + 1, i:]  # spread onto the columns not yet quantized
            Err[:, i:i + 1] = err
        W[:, i2:] -= Err @ Hinv[i1:i2, i2:]
    return Int4Groups(codes, scales, mins, g)


def _as_calibration(calib: Any) -> Any:
    if isinstance(calib, torch.Tensor):
        from llmspeed.compress.calibration import Calibration

        return Calibration(tokens=calib.long())
    return calib


def restore_gptq(model: nn.Module, cfg: GPTQConfig) -> None:
    restore_int4(model, cfg.int4)


@register_step(r"int4-g(?P<group>\d+)" + GRID_PATTERN + "-gptq", form="int4-g{32,64,128}[-asym|-sym]-gptq",
               config=lambda group, grid: GPTQConfig(int(group), symmetric=grid == "-sym"),
               needs_calibration=True, restore=restore_gptq)
def gptq_step(model: nn.Module, cfg: GPTQConfig, calib: Any) -> StepReport:
    """Calibrated GPTQ rounding into group-wise int4 (Hessian from calibration activations)."""
    from llmspeed.compress.calibration import collect_activation_stats

    name = cfg.token
    check_groups(model, cfg.group_size, cfg.skip, name)
    targets = list(iter_linears(model, skip=cfg.skip))
    rep = StepReport(step=name)
    stats = collect_activation_stats(model, _as_calibration(calib), [n for n, _ in targets], gram=True)
    for n, lin in targets:
        st = stats[n]
        groups = gptq_quantize(lin.weight, st.gram, st.n_tokens, cfg)  # type: ignore[arg-type]
        set_module(model, n, Int4Linear.from_groups(groups, lin.bias))  # type: ignore[arg-type]
        rep.changed.append(n)
        log.debug("gptq: %s done", n)
    return rep
