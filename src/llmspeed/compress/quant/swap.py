"""Module-swap driver shared by the quantization steps: same layer selection at compress and restore time."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from llmspeed.compress.api import StepReport, iter_linears, set_module


def swap_linears(model: nn.Module, step: str, skip: tuple[str, ...],
                 build: Callable[[nn.Linear], nn.Module]) -> StepReport:
    """Replace every selected nn.Linear by `build(linear)`."""
    rep = StepReport(step=step)
    for name, lin in iter_linears(model, skip=skip):
        set_module(model, name, build(lin))  # type: ignore[arg-type]
        rep.changed.append(name)
    return rep


def restore_linears(model: nn.Module, skip: tuple[str, ...], empty: Callable[[nn.Linear], nn.Module]) -> None:
    """On a META model: put shape-only quantized modules where `swap_linears` put real ones."""
    for name, lin in iter_linears(model, skip=skip):
        set_module(model, name, empty(lin))  # type: ignore[arg-type]
