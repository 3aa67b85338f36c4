"""llmspeed.compress: recipes of compression steps (quantization, pruning, low-rank) applied by module swap.

Nothing heavy at import: step modules register themselves when the registry is first used.
"""

from __future__ import annotations

import importlib
import logging

log = logging.getLogger(__name__)

# modules whose import registers steps; packages another part of the project may not have written yet are optional
BUILTIN_STEP_MODULES = ("llmspeed.compress.quant", "llmspeed.compress.compile_step", "llmspeed.compress.presets")
OPTIONAL_STEP_MODULES = ("llmspeed.compress.prune", "llmspeed.compress.lowrank")


def load_builtin_steps() -> None:
    for name in BUILTIN_STEP_MODULES:
        importlib.import_module(name)
    for name in OPTIONAL_STEP_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is None or not name.startswith(e.name):
                raise
            log.debug("optional step module %s not present", name)
