"""Thread count policy (default = physical cores) and the OpenMP worker teams of the threads that run torch.

Why `release_openmp_workers`: the OpenMP runtime in torch's Linux wheels (libgomp) keeps one worker team per
thread that ever ran a parallel region. Once the process has more of those workers than CPUs, libgomp cuts the
time an idle worker spins before it sleeps from ~300k iterations to ~100, so every parallel region pays a futex
wake-up of each worker. Measured (AMD EPYC, 2 vCPUs): an int4 q_proj at M=1 takes 33 us from the thread that
loaded the model, 100-176 us from a second thread once the first has its team, 29 us from the second thread when
it is the only one with a team (`benchmarks/engine_thread.py`). The server's engine runs in its own thread after
the main thread loaded (and ran) the model, so the main thread hands its team back when the engine starts.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

import torch

from llmspeed.util.cpu import cpu_info

log = logging.getLogger(__name__)

OMP_PAUSE_SOFT = 1  # omp_pause_resource_t: release the threads, keep the runtime's settings
OPENMP_LIBS = ("libgomp", "libiomp5", "libomp")


def physical_cores() -> int:
    return cpu_info().physical_cores


def set_threads(n: int | None = None) -> int:
    n = n or physical_cores()
    if n <= 0:
        raise ValueError(f"threads must be > 0, got {n}")
    torch.set_num_threads(n)
    return n


def openmp_runtime_path() -> str | None:
    """The OpenMP runtime this process has loaded (the one torch uses), or None (not Linux, or not loaded)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        parts = line.split(maxsplit=5)  # address perms offset dev inode [path]
        path = parts[5] if len(parts) == 6 else ""
        if os.path.basename(path).startswith(OPENMP_LIBS) and ".so" in path:
            return path
    return None


def release_openmp_workers() -> bool:
    """Hand back the calling thread's OpenMP worker team (`omp_pause_resource_all(omp_pause_soft)`), so that the
    thread that runs the model from now on is the only one with workers. The caller gets a new team if it runs a
    parallel region again. True when the runtime did it; False when there is no such runtime or call."""
    path = openmp_runtime_path()
    if path is None:
        return False
    lib = ctypes.CDLL(path)  # the already-loaded library: dlopen returns the same handle
    pause = getattr(lib, "omp_pause_resource_all", None)
    if pause is None:
        return False
    pause.argtypes, pause.restype = [ctypes.c_int], ctypes.c_int
    ok = pause(OMP_PAUSE_SOFT) == 0
    log.debug("released this thread's OpenMP workers (%s): %s", os.path.basename(path), ok)
    return ok
