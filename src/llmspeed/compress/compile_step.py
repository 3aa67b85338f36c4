"""`compile[-b<bucket>][-autotune][-cpp]`: run decode steps through a compiled graph (runtime/compiled.py).

Not structural and changes no weights: the token is a saved choice of how the model runs. `llm.py` turns this
step's config into the runtime's `CompileConfig` (`RuntimeOptions.compile`); the engine compiles lazily on the
first decode. A saved model whose recipe contains `compile` decodes compiled after `llmspeed.load`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from llmspeed.compress.api import StepReport, register_step

MODES = ("default", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class CompileStepConfig:
    bucket: int = 128  # KV length padded up to a multiple of this
    mode: str = "default"  # torch.compile mode
    cpp_wrapper: bool = False  # inductor emits a C++ wrapper instead of Python glue

    def __post_init__(self) -> None:
        if self.bucket <= 0 or self.bucket % 16:
            raise ValueError(f"bucket must be a positive multiple of 16, got {self.bucket}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")


def _config(bucket: str | None, autotune: str | None, cpp: str | None) -> CompileStepConfig:
    return CompileStepConfig(bucket=int(bucket) if bucket else CompileStepConfig.bucket,
                             mode="max-autotune-no-cudagraphs" if autotune else "default", cpp_wrapper=cpp is not None)


@register_step(r"compile(?:-b(?P<bucket>\d+))?(?P<autotune>-autotune)?(?P<cpp>-cpp)?",
               form="compile[-b<bucket>][-autotune][-cpp]", config=_config)
def compile_step(model: nn.Module, cfg: CompileStepConfig, calib: object | None) -> StepReport:
    """torch.compile the decode step (static shapes: KV length padded to buckets); prefill stays eager."""
    return StepReport(step="compile", changed=["<decode step>"],
                      notes=[f"decode compiled on first use (KV bucket {cfg.bucket}, mode {cfg.mode}, "
                             f"cpp_wrapper {cfg.cpp_wrapper})"])
