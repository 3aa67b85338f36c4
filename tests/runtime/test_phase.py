"""Phase plans: the pure choice from timings, the env override, the per-machine cache, fused modules included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from llmspeed.layers.quant.int4 import Int4Linear
from llmspeed.layers.quant.int8 import Int8Linear
from llmspeed.layers.quant.plan import ExecPlan
from llmspeed.runtime import phase
from llmspeed.runtime.options import RuntimeOptions
from llmspeed.runtime.plans import plan_layers, reference_paths


def test_choose_plan_picks_fastest_prefill_and_crossover() -> None:
    plan = phase.choose_plan({"kernel": 9.0, "bf16": 1.0, "fp32": 4.0},
                             kernel_times={8: 1.0, 16: 2.0, 32: 4.0, 64: 8.0},
                             dense_times={8: 3.0, 16: 3.0, 32: 3.0, 64: 3.0})
    assert plan == ExecPlan(small_m=16, prefill="bf16")
    # the kernel is fastest for prefill too: every row count stays on it
    assert phase.choose_plan({"kernel": 1.0, "fp32": 2.0}, {}, {}).prefill == "kernel"
    # the dense path wins from the first candidate on: decode of one row still uses the kernel
    assert phase.choose_plan({"kernel": 9.0, "fp32": 1.0}, {8: 5.0}, {8: 1.0}).small_m == 1


def test_phase_plan_validates() -> None:
    with pytest.raises(ValueError, match="prefill path"):
        ExecPlan(prefill="gpu")
    with pytest.raises(ValueError, match="small_m"):
        ExecPlan(small_m=0)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = Int8Linear.from_dense(nn.Linear(64, 32))
        self.b = Int4Linear.from_dense(nn.Linear(64, 48), 32)


def test_plans_are_measured_once_then_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMSPEED_CACHE", str(tmp_path))
    calls: list[str] = []
    real = phase.measure_plan
    monkeypatch.setattr(phase, "measure_plan", lambda m: calls.append(m.shape_key()) or real(m))
    model = _Tiny()
    plans = plan_layers(model, RuntimeOptions())
    assert sorted(calls) == sorted(plans) and len(plans) == 2
    assert model.a.plan == plans[model.a.shape_key()]
    cached = json.loads((tmp_path / "phase.json").read_text())
    assert set(next(iter(cached.values()))) == set(plans)
    calls.clear()
    again = _Tiny()
    assert plan_layers(again, RuntimeOptions()) == plans and calls == []  # second load: no measurement
    phase.forget_plans()  # `llmspeed profile --recalibrate`
    plan_layers(_Tiny(), RuntimeOptions())
    assert sorted(calls) == sorted(plans)


def test_options_force_the_prefill_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMSPEED_CACHE", str(tmp_path))
    model = _Tiny()
    plan_layers(model, RuntimeOptions(prefill="fp32"))
    assert model.a.plan.prefill == "fp32" and model.b.plan.prefill == "fp32"
    assert not (tmp_path / "phase.json").exists()
    with pytest.raises(ValueError, match="prefill path"):
        RuntimeOptions(prefill="tpu")


def test_one_plan_per_layer_carries_act_q8_and_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime options decide int8 activations and the reference math; a layer is never poked elsewhere."""
    monkeypatch.setenv("LLMSPEED_CACHE", str(tmp_path))
    model = _Tiny()
    plan_layers(model, RuntimeOptions(prefill="fp32", act_q8=True))
    assert model.a.plan.act_q8 and model.b.plan.act_q8 and not model.a.plan.reference
    x = torch.randn(3, 64)
    fast = model.b(x)
    with reference_paths(model):
        assert model.a.plan.reference and model.b.plan.act_q8
        ref = model.b(x)  # the q8 math in plain torch
    assert not model.b.plan.reference  # restored
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)
    plan_layers(model, RuntimeOptions(prefill="fp32"))
    assert not model.a.plan.act_q8 and not model.b.plan.act_q8


def test_planned_paths_agree_with_the_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the measurement picked, many rows give the dequantized-weight result within the bf16 bound."""
    monkeypatch.setenv("LLMSPEED_CACHE", str(tmp_path))
    model = _Tiny()
    plan_layers(model, RuntimeOptions())
    x = torch.randn(300, 64)  # more rows than any small_m candidate
    for m in (model.a, model.b):
        ref = x @ m.dequantized_weight().T + m.bias
        assert float((m(x) - ref).norm() / ref.norm()) < 1.5e-2
