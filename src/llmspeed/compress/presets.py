"""Named recipes (presets) that `Recipe.parse` expands in place; a saved model stores the expanded steps.

`speed`: the fastest combination measured whose ΔPPL stays within 5 % on the held-out Shakespeare plays
(docs/decisions.md, "Speed (issue 13)", has the A/B figures and settings it was chosen from).
"""

from __future__ import annotations

from llmspeed.compress.api import register_alias

SPEED = "int8-head,int4-g32-asym,a8,compile"

register_alias("speed", SPEED)
