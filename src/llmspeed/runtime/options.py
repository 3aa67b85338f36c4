"""How the runtime runs a model: the choices that are not in its weights, as one frozen value.

`llm.py` derives them from the recipe (`a8` -> int8 activations, `compile` -> a compiled decode step) and the
user's overrides (`--prefill-path`); the engine and `runtime.plans.prepare_model` apply them. Nothing else sets a
layer's execution plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmspeed.layers.quant.plan import PREFILL_PATHS
from llmspeed.runtime.compiled import CompileConfig

PREFILL_CHOICES = ("auto", *PREFILL_PATHS)


@dataclass(frozen=True)
class RuntimeOptions:
    act_q8: bool = False  # decode kernels of the int4/int8 linears on int8 activations (the recipe's `a8`)
    compile: CompileConfig | None = None  # compiled decode step (the recipe's `compile`), else eager
    prefill: str = "auto"  # prefill path of the quantized linears: measured per machine, or forced
    reference: bool = False  # the recipe's math in plain torch, separate projections (fast-path reference)

    def __post_init__(self) -> None:
        if self.prefill not in PREFILL_CHOICES:
            raise ValueError(f"prefill path must be one of {', '.join(PREFILL_CHOICES)}, got {self.prefill!r}")
