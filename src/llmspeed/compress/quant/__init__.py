"""Quantization steps; importing this package registers them (see llmspeed.compress.api.STEPS)."""

from __future__ import annotations

from llmspeed.compress.quant import act8, gptq, int4, int8, int8_dyn, int8_head, mixed  # noqa: F401  (registration)
