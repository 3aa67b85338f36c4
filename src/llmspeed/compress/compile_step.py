"""`compile[-b<bucket>][-autotune][-cpp]`: run decode steps through a `torch.compile`d graph (runtime/compiled.py).

Not structural and changes no weights: the step only records a `CompileConfig` on the model
(`model.llmspeed_compile`); the engine picks it up when it is built and compiles lazily on the first decode.
A saved model whose recipe contains `compile` gets the same attribute back through `restore` (the registry's
load-time replay), so it decodes compiled after `llmspeed.load` without anything else in the file.
"""

from __future__ import annotations

from torch import nn

from llmspeed.compress.api import StepReport, register_step
from llmspeed.runtime.compiled import ATTR, CompileConfig


def _config(bucket: str | None, autotune: str | None, cpp: str | None) -> CompileConfig:
    return CompileConfig(bucket=int(bucket) if bucket else CompileConfig.bucket,
                         mode="max-autotune-no-cudagraphs" if autotune else "default", cpp_wrapper=cpp is not None)


def restore_compile(model: nn.Module, cfg: CompileConfig) -> None:
    setattr(model, ATTR, cfg)


@register_step(r"compile(?:-b(?P<bucket>\d+))?(?P<autotune>-autotune)?(?P<cpp>-cpp)?",
               form="compile[-b<bucket>][-autotune][-cpp]", config=_config, restore=restore_compile)
def compile_step(model: nn.Module, cfg: CompileConfig, calib: object | None) -> StepReport:
    """torch.compile the decode step (static shapes: KV length padded to buckets); prefill stays eager."""
    restore_compile(model, cfg)
    return StepReport(step="compile", changed=["<decode step>"],
                      notes=[f"decode compiled on first use (KV bucket {cfg.bucket}, mode {cfg.mode}, "
                             f"cpp_wrapper {cfg.cpp_wrapper})"])
