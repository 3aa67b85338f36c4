"""Thread count policy: default = physical cores."""

from __future__ import annotations

import torch

from llmspeed.util.cpu import cpu_info


def physical_cores() -> int:
    return cpu_info().physical_cores


def set_threads(n: int | None = None) -> int:
    n = n or physical_cores()
    if n <= 0:
        raise ValueError(f"threads must be > 0, got {n}")
    torch.set_num_threads(n)
    return n
