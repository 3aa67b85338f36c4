"""Set every quantized layer's ExecPlan, in one place: from the measured table, the runtime options and overrides.

`prepare_model(model, options)` is what the engine and `LLM` call (idempotent): projection fusion, then one frozen
ExecPlan per phase-aware linear. `reference_paths(model)` is the fast-path reference as just another plan: separate
projections, every quantized linear computing its recipe's math in plain torch, restored on exit.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

from torch import nn

from llmspeed.layers.linear import fused_parts
from llmspeed.layers.quant.plan import ExecPlan, PhaseAware
from llmspeed.runtime.options import RuntimeOptions
from llmspeed.runtime.phase import measured_plans


def phase_modules(model: nn.Module) -> list[PhaseAware]:
    """Every phase-aware linear, including the fused q/k/v and gate/up modules projection fusion built."""
    out: list[PhaseAware] = []
    for mod in model.modules():
        if isinstance(mod, PhaseAware):
            out.append(mod)
        fused = getattr(getattr(mod, "fused", None), "fused", None)
        if isinstance(fused, PhaseAware):
            out.append(fused)
    return out


def running_phase_modules(model: nn.Module) -> list[PhaseAware]:
    """The phase-aware linears a forward runs: a valid fused q/k/v or gate/up module stands in for its parts (which
    keep plans of their own, measured for their own shapes, that no forward uses)."""
    replaced: set[int] = set()
    for mod in model.modules():
        f = getattr(mod, "fused", None)
        if f is None:
            continue
        parts = fused_parts(mod)
        if f.valid(parts):
            replaced.update(id(p) for p in parts)
    return [m for m in phase_modules(model) if id(m) not in replaced]


def plan_layers(model: nn.Module, options: RuntimeOptions) -> dict[str, ExecPlan]:
    """Give every phase-aware linear its plan; returns {shape key: plan} (act_q8 only where a layer supports it)."""
    mods = phase_modules(model)
    if not mods:
        return {}
    if options.prefill == "auto":
        table = measured_plans(mods)
    else:
        table = {m.shape_key(): ExecPlan(prefill=options.prefill) for m in mods}
    plans: dict[str, ExecPlan] = {}
    for m in mods:
        plan = dataclasses.replace(table[m.shape_key()], act_q8=options.act_q8 and m.supports_act_q8,
                                   reference=options.reference)
        m.plan = plan
        plans[m.shape_key()] = plan
    return plans


def prepare_model(model: nn.Module, options: RuntimeOptions) -> None:
    """Idempotent: one GEMM for q/k/v and for gate/up where those layers fuse, then each layer's plan."""
    for mod in model.modules():
        if hasattr(mod, "fuse_projections"):
            mod.fuse_projections()
    plan_layers(model, options)


def current_plans(model: nn.Module) -> list[dict]:
    """Every phase-aware layer's plan, in module order, as plain dicts (to give another process the same plans)."""
    return [dataclasses.asdict(m.plan) for m in phase_modules(model)]


def apply_plans(model: nn.Module, plans: list[dict]) -> None:
    """Set the plans `current_plans` read from a model of the same structure (a data-parallel worker's copy), so
    both run the same paths — a per-process `auto` measurement could otherwise choose differently."""
    mods = phase_modules(model)
    if len(mods) != len(plans):
        raise ValueError(f"{len(plans)} plans for {len(mods)} phase-aware layers: not the same model structure")
    for m, p in zip(mods, plans, strict=True):
        m.plan = ExecPlan(**p)


@contextlib.contextmanager
def reference_paths(model: nn.Module) -> Iterator[None]:
    """Within this block: separate projections, and every quantized linear computes its recipe's math in plain torch
    (float32 GEMMs on the dequantized weight, plus the int8 activation rounding where its plan has it)."""
    fused = [(mod, mod.fused) for mod in model.modules() if getattr(mod, "fused", None) is not None]
    plans = [(m, m.plan) for m in phase_modules(model)]
    for mod, _ in fused:
        mod.fused = None
    for m, plan in plans:
        m.plan = dataclasses.replace(plan, reference=True)
    try:
        yield
    finally:
        for m, plan in plans:
            m.plan = plan
        for mod, f in fused:
            mod.fused = f
