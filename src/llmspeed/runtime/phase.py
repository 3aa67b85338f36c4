"""Choose each phase-aware linear's paths on this machine: measured once, cached, overridable.

For every distinct (module kind, N, K) the model holds, `plan_phases` times the candidate paths on random
activations of that layer's own shape (compress/quant/phase.py):
- prefill rows (PREFILL_ROWS): the low-bit kernel, a bf16 GEMM (only where the CPU multiplies bf16 natively)
  and a float32 GEMM on the dequantized weight; the fastest wins;
- the crossover `small_m`: the largest row count in SMALL_M_CANDIDATES at which the kernel still beats that
  prefill path (decode batches up to it stay on the kernel).
Results are cached in `$LLMSPEED_CACHE/phase.json`, keyed by CPU model, torch version, thread count and the
kernels' backend, so later loads cost nothing. `LLMSPEED_PREFILL=kernel|bf16|fp32` forces the prefill path
(`auto`, the default, measures); `llmspeed ... --prefill-path` sets that variable.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path

import torch
from torch import nn

from llmspeed.compress.quant.common import fast_half_matmul
from llmspeed.compress.quant.phase import PREFILL_PATHS, PhaseAware, PhasePlan
from llmspeed.profiling.roofline import best_time

log = logging.getLogger(__name__)

PREFILL_ROWS = 256
SMALL_M_CANDIDATES = (8, 16, 32, 64)
ENV = "LLMSPEED_PREFILL"
REPS = 5  # timed calls per candidate (best of), after one warm-up


def _cache_file() -> Path:
    root = Path(os.environ.get("LLMSPEED_CACHE") or Path.home() / ".cache" / "llmspeed")
    return root / "phase.json"


def _machine_key() -> str:
    from llmspeed import kernels

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}|torch {torch.__version__}|threads {torch.get_num_threads()}|{kernels.backend()}"


def forget_plans() -> None:
    """Drop this machine's cached plans (`llmspeed profile --recalibrate`): the next load measures again."""
    path = _cache_file()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if cache.pop(_machine_key(), None) is not None:
        path.write_text(json.dumps(cache, indent=1, sort_keys=True))


def choose_plan(prefill_times: dict[str, float], kernel_times: dict[int, float],
                dense_times: dict[int, float]) -> PhasePlan:
    """Pure decision from measured seconds: fastest prefill path; largest M where the kernel still wins."""
    prefill = min(prefill_times, key=lambda p: prefill_times[p])
    small_m = 1
    for m in sorted(kernel_times):
        if prefill == "kernel" or kernel_times[m] <= dense_times.get(m, float("inf")):
            small_m = m
        else:
            break
    return PhasePlan(small_m=max(small_m, 1), prefill=prefill)


def measure_plan(mod: PhaseAware) -> PhasePlan:
    """Time the candidate paths for this module's shape (a few ms to ~1 s for a big layer)."""
    K = mod.in_features
    gen = torch.Generator().manual_seed(0)
    paths = [p for p in PREFILL_PATHS if p != "bf16" or fast_half_matmul(torch.bfloat16)]
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


def _phase_modules(model: nn.Module) -> list[PhaseAware]:
    """Every phase-aware linear, including the fused q/k/v and gate/up modules projection fusion built."""
    out: list[PhaseAware] = []
    for mod in model.modules():
        if isinstance(mod, PhaseAware):
            out.append(mod)
        fused = getattr(getattr(mod, "fused", None), "fused", None)
        if isinstance(fused, PhaseAware):
            out.append(fused)
    return out


def plan_phases(model: nn.Module) -> dict[str, PhasePlan]:
    """Give every phase-aware linear its plan (forced by $LLMSPEED_PREFILL, cached, or measured now)."""
    mods = _phase_modules(model)
    if not mods:
        return {}
    forced = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if forced != "auto":
        if forced not in PREFILL_PATHS:
            raise ValueError(f"{ENV} must be auto or one of {', '.join(PREFILL_PATHS)}, got {forced!r}")
        plan = PhasePlan(prefill=forced)
        for m in mods:
            m.plan = plan
        return {m.shape_key(): plan for m in mods}
    path = _cache_file()
    machine = _machine_key()
    try:
        cache = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        cache = {}
    mine = cache.setdefault(machine, {})
    plans: dict[str, PhasePlan] = {}
    measured = 0
    t0 = time.perf_counter()
    for m in mods:
        key = m.shape_key()
        if key not in plans:
            if key in mine:
                plans[key] = PhasePlan(**mine[key])
            else:
                plans[key] = measure_plan(m)
                measured += 1
                mine[key] = {"small_m": plans[key].small_m, "prefill": plans[key].prefill}
        m.plan = plans[key]
    if measured:
        log.info("measured prefill/decode paths for %d layer shapes in %.1f s: %s", measured,
                 time.perf_counter() - t0, ", ".join(f"{k} -> {p.prefill} above {p.small_m} rows"
                                                     for k, p in plans.items()))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
            tmp.replace(path)
        except OSError as e:
            log.warning("could not cache phase plans in %s: %s", path, e)
    return plans
