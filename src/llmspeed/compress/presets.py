"""Named recipes (presets) that `Recipe.parse` expands in place; a saved model stores the expanded steps.

`speed`: the fastest combination measured whose ΔPPL stays within 5 % on the held-out Shakespeare plays AND whose
engine fast path agrees with the recipe's plain reference on >= 99 % of top-1 tokens (issue 13's targets).
`speed-a8`: `speed` plus int8 activations in the decode kernels (~1.3x faster decode), whose rounding costs
that agreement (~95 %): a measured, opt-in trade (docs/decisions.md, "Speed (issue 13)").
"""

from __future__ import annotations

from llmspeed.compress.api import register_alias

SPEED = "int8-head,int4-g32-asym,compile"
SPEED_A8 = SPEED.replace(",compile", ",a8,compile")  # + int8 activations in the decode kernels (W4A8, llama.cpp-style)

register_alias("speed", SPEED)
register_alias("speed-a8", SPEED_A8)
