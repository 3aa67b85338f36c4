"""The per-machine table of each phase-aware linear's paths: measured once, cached, re-measurable.

For every distinct (module kind, N, K) the model holds, `measure_plan` times the candidate paths on random
activations of that layer's own shape (layers/quant/plan.py):
- prefill rows (PREFILL_ROWS): the low-bit kernel, a bf16 GEMM (only where the CPU multiplies bf16 natively)
  and a float32 GEMM on the dequantized weight; the fastest wins;
- the crossover `small_m`: the largest row count in SMALL_M_CANDIDATES at which the kernel still beats that
  prefill path (decode batches up to it stay on the kernel).
Results are cached in `$LLMSPEED_CACHE/phase.json`, keyed by CPU model, torch version, thread count and the
kernels' backend, so later loads cost nothing. `runtime/plans.py` turns the table into each layer's ExecPlan.
"""

from __future__ import annotations

import json
import logging
import time

import torch

from llmspeed.layers.quant.plan import PREFILL_PATHS, ExecPlan, PhaseAware
from llmspeed.util.atomic import write_text_atomically
from llmspeed.util.cache import cache_path
from llmspeed.util.cpu import cpu_info, fast_half_matmul
from llmspeed.util.timing import best_time

log = logging.getLogger(__name__)

PREFILL_ROWS = 256
SMALL_M_CANDIDATES = (8, 16, 32, 64)
REPS = 5  # timed calls per candidate (best of), after one warm-up


def _machine_key() -> str:
    from llmspeed import kernels

    return f"{cpu_info().model}|torch {torch.__version__}|threads {torch.get_num_threads()}|{kernels.backend()}"


def forget_plans() -> None:
    """Drop this machine's cached plans (`llmspeed profile --recalibrate`): the next load measures again."""
    path = cache_path("phase.json")
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if cache.pop(_machine_key(), None) is not None:
        write_text_atomically(path, json.dumps(cache, indent=1, sort_keys=True))


def choose_plan(prefill_times: dict[str, float], kernel_times: dict[int, float],
                dense_times: dict[int, float]) -> ExecPlan:
    """Pure decision from measured seconds: fastest prefill path; largest M where the kernel still wins."""
    prefill = min(prefill_times, key=lambda p: prefill_times[p])
    small_m = 1
    for m in sorted(kernel_times):
        if prefill == "kernel" or kernel_times[m] <= dense_times.get(m, float("inf")):
            small_m = m
        else:
            break
    return ExecPlan(small_m=max(small_m, 1), prefill=prefill)


def measure_plan(mod: PhaseAware) -> ExecPlan:
    """Time the candidate paths for this module's shape (a few ms to ~1 s for a big layer)."""
    K = mod.in_features
    gen = torch.Generator().manual_seed(0)
    paths = [p for p in PREFILL_PATHS if p != "bf16" or fast_half_matmul("bf16")]
    dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
    x = torch.randn(PREFILL_ROWS, K, generator=gen)  # [M, K]
    with torch.inference_mode():
        prefill = {p: best_time(lambda p=p: mod.kernel_matmul(x) if p == "kernel" else mod.dense_matmul(x, dtypes[p]),
                                REPS) for p in paths}
        best = min(prefill, key=lambda p: prefill[p])
        kern: dict[int, float] = {}
        dense: dict[int, float] = {}
        if best != "kernel":
            for m in SMALL_M_CANDIDATES:
                xm = x[:m].contiguous()
                kern[m] = best_time(lambda xm=xm: mod.kernel_matmul(xm), REPS)
                dense[m] = best_time(lambda xm=xm: mod.dense_matmul(xm, dtypes[best]), REPS)
    return choose_plan(prefill, kern, dense)


def measured_plans(mods: list[PhaseAware]) -> dict[str, ExecPlan]:
    """{shape key: measured plan} for `mods`, from this machine's cache or measured now (and cached)."""
    path = cache_path("phase.json")
    machine = _machine_key()
    try:
        cache = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        cache = {}
    mine = cache.setdefault(machine, {})
    plans: dict[str, ExecPlan] = {}
    measured = 0
    t0 = time.perf_counter()
    for m in mods:
        key = m.shape_key()
        if key in plans:
            continue
        if key in mine:
            plans[key] = ExecPlan(**mine[key])
        else:
            plans[key] = measure_plan(m)
            measured += 1
            mine[key] = {"small_m": plans[key].small_m, "prefill": plans[key].prefill}
    if measured:
        log.info("measured prefill/decode paths for %d layer shapes in %.1f s: %s", measured,
                 time.perf_counter() - t0, ", ".join(f"{k} -> {p.prefill} above {p.small_m} rows"
                                                     for k, p in plans.items()))
        try:
            write_text_atomically(path, json.dumps(cache, indent=1, sort_keys=True))
        except OSError as e:
            log.warning("could not cache phase plans in %s: %s", path, e)
    return plans
