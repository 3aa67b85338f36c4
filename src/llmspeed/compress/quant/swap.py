"""Module-swap driver shared by the quantization steps: same layer selection at compress and restore time."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from llmspeed.compress.api import StepReport, iter_linears, set_module

# (linear) -> reason to leave it alone, or None to swap it; must depend on shapes only (restore has no weights)
Check = Callable[[nn.Linear], str | None]


def swap_linears(model: nn.Module, step: str, skip: tuple[str, ...], build: Callable[[nn.Linear], nn.Module],
                 check: Check | None = None) -> StepReport:
    """Replace every selected nn.Linear by `build(linear)`; skipped ones are reported with their reason."""
    rep = StepReport(step=step)
    for name, lin in iter_linears(model, skip=skip):
        reason = check(lin) if check else None  # type: ignore[arg-type]
        if reason:
            rep.skipped[name] = reason
            continue
        set_module(model, name, build(lin))  # type: ignore[arg-type]
        rep.changed.append(name)
    return rep


def restore_linears(model: nn.Module, skip: tuple[str, ...], empty: Callable[[nn.Linear], nn.Module],
                    check: Check | None = None) -> None:
    """On a META model: put shape-only quantized modules where `swap_linears` put real ones."""
    for name, lin in iter_linears(model, skip=skip):
        if check is None or not check(lin):  # type: ignore[arg-type]
            set_module(model, name, empty(lin))  # type: ignore[arg-type]
