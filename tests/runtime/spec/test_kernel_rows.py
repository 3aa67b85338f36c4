"""The draft's k cap reads the plans of the linears a forward runs: fused q/k/v and gate/up stand in for their parts."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import llmspeed
from llmspeed.runtime.plans import phase_modules, running_phase_modules
from llmspeed.runtime.spec.decoder import kernel_rows


def test_fused_parts_do_not_cap_the_draft(tiny_model_dir: Callable[..., Path]) -> None:
    llm = llmspeed.load(tiny_model_dir("llama"), recipe="int4-g32-asym", prefill="fp32")
    model = llm.model
    fused = [m.fused for m in model.modules() if getattr(m, "fused", None) is not None]
    assert fused, "the tiny llama fuses q/k/v and gate/up"
    parts = {id(lin) for f in fused for lin in f.linears}
    running = running_phase_modules(model)
    assert not parts & {id(m) for m in running}
    assert {id(f.fused) for f in fused} <= {id(m) for m in running}
    for m in phase_modules(model):  # every layer on its kernel up to 16 rows, the unused parts up to 1 row
        m.plan = dataclasses.replace(m.plan, small_m=1 if id(m) in parts else 16, prefill="fp32")
    assert kernel_rows(model) == 16
    for f in fused:  # an invalid fusion (a part replaced) runs the parts again: their plans count
        f.linears[0].weight_codes = f.linears[0].weight_codes.clone()
    assert kernel_rows(model) == 2  # min(1 row) raised to 2: k >= 1 always possible
