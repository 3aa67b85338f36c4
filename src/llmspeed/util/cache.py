"""Where llmspeed keeps what it computes once per machine: converted models, kernels, plans, compile caches."""

from __future__ import annotations

import os
from pathlib import Path

ENV = "LLMSPEED_CACHE"


def cache_root() -> Path:
    """`$LLMSPEED_CACHE` when set and non-empty, else `~/.cache/llmspeed` (the same rule everywhere)."""
    root = os.environ.get(ENV, "").strip()
    return Path(root).expanduser() if root else Path.home() / ".cache" / "llmspeed"


def cache_path(*parts: str) -> Path:
    """A path under the cache root, e.g. `cache_path("phase.json")`; nothing is created."""
    return cache_root().joinpath(*parts)
