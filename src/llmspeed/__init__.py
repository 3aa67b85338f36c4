"""llmspeed: make a language model answer faster and cheaper, and prove what it cost.

Nothing heavy is imported here: names resolve lazily on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["LLM", "AutoResult", "EngineConfig", "Recipe", "SamplingParams", "__version__", "auto", "compress_",
           "evaluate", "load"]

_LAZY = {
    "LLM": ("llmspeed.llm", "LLM"),
    "load": ("llmspeed.llm", "load"),
    "compress_": ("llmspeed.llm", "compress_"),
    "Recipe": ("llmspeed.compress.api", "Recipe"),
    "evaluate": ("llmspeed.evaluation.api", "evaluate"),
    "auto": ("llmspeed.auto.api", "auto"),
    "AutoResult": ("llmspeed.auto.result", "AutoResult"),
    "SamplingParams": ("llmspeed.runtime.sequence", "SamplingParams"),
    "EngineConfig": ("llmspeed.runtime.engine", "EngineConfig"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'llmspeed' has no attribute {name!r}")
