"""Quantization steps; importing this package registers them (see llmspeed.compress.api.STEPS)."""

from __future__ import annotations

import importlib

for _m in ("mixed", "int8", "int8_dyn", "int8_head", "int4", "gptq"):
    try:
        importlib.import_module(f"{__name__}.{_m}")
    except ModuleNotFoundError as _e:  # a step file not written yet
        if _e.name != f"{__name__}.{_m}":
            raise
