"""`llmspeed auto`: search compression recipes (and serving settings) for the fastest model inside an accuracy budget.

config.py (objective, criteria, budgets) · space.py (the search space, presets as seeds, candidate sources) ·
search.py (screen -> confirm -> choose, pure over a `Measurer`) · store.py (trials in SQLite, resumable) ·
measure.py (the real measurer: eval slices, speed runs) · pareto.py · ablation.py · report.py · api.py.
Nothing heavy is imported here.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    """`llmspeed.auto(...)` is the public API, and `llmspeed.auto` is also this package: once the package is imported,
    Python binds the name to the module, so the module itself forwards calls to `api.auto` (same signature)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from llmspeed.auto.api import auto

        return auto(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
