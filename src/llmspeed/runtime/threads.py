"""Thread count policy: default = physical cores."""

from __future__ import annotations

import os

import torch


def physical_cores() -> int:
    try:
        cores = set()
        phys = core = None
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("physical id"):
                    phys = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":")[1].strip()
                    cores.add((phys, core))
        if cores:
            return min(len(cores), os.cpu_count() or len(cores))
    except OSError:
        pass
    return os.cpu_count() or 1


def set_threads(n: int | None = None) -> int:
    n = n or physical_cores()
    if n <= 0:
        raise ValueError(f"threads must be > 0, got {n}")
    torch.set_num_threads(n)
    return n
