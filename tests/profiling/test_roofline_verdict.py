"""Roofline arithmetic and the verdict logic on known, synthetic numbers (no timing involved)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from llmspeed.profiling import roofline
from llmspeed.profiling.verdict import COMPUTE, MEMORY, OVERHEAD, PREPROCESSING, Figures, Thresholds, diagnose


class _Cfg:
    n_layers, n_kv_heads, n_heads, head_dim = 2, 2, 4, 8


class Tiny(nn.Module):
    """vocab 100 x hidden 32 embedding tied to the head, two 32x64 linears, a 32-wide norm weight."""

    def __init__(self, tied: bool = True) -> None:
        super().__init__()
        self.config = _Cfg()
        self.embed = nn.Embedding(100, 32)
        self.up = nn.Linear(32, 64, bias=False)
        self.down = nn.Linear(64, 32, bias=False)
        self.norm_w = nn.Parameter(torch.ones(32))
        self.lm_head = nn.Linear(32, 100, bias=False)
        if tied:
            self.lm_head.weight = self.embed.weight


def test_weight_bytes_tied_counts_table_once_fully() -> None:
    # tied: table 100*32 read fully by the head; linears 2*32*64; norm 32  (float32)
    assert roofline.weight_bytes_per_decode_step(Tiny(tied=True)) == 4 * (100 * 32 + 2 * 32 * 64 + 32)


def test_weight_bytes_untied_embedding_counts_rows_read() -> None:
    m = Tiny(tied=False)
    assert roofline.weight_bytes_per_decode_step(m, batch=1) == 4 * (32 + 2 * 32 * 64 + 32 + 100 * 32)
    assert roofline.weight_bytes_per_decode_step(m, batch=3) == 4 * (3 * 32 + 2 * 32 * 64 + 32 + 100 * 32)


def test_kv_and_flops_on_known_shapes() -> None:
    m = Tiny()
    # 2 (K,V) * 2 layers * 2 kv heads * 8 dims * 4 bytes * 10 positions * batch 2
    assert roofline.kv_bytes_per_decode_step(m, 10, batch=2) == 2 * 2 * 2 * 8 * 4 * 10 * 2
    assert roofline.matmul_macs_per_token(m) == (2 * 32 * 64, 32 * 100)
    t = 4
    attn = 2 * 2 * 4 * 8 * t * (t + 1) // 2  # (QK^T + PV) * layers * heads * dim * causal pairs
    assert roofline.prefill_flops(m, t) == 2 * (2 * 32 * 64 * t + 32 * 100 + attn)


def test_roofline_time_and_achieved() -> None:
    assert roofline.achieved_gbs(20e9, 2.0) == pytest.approx(10.0)
    assert roofline.roofline_time(10e9, 1e9, bandwidth_gbs=10, peak_gflops=100) == pytest.approx(1.0)
    assert roofline.roofline_time(1e9, 1e12, bandwidth_gbs=10, peak_gflops=100) == pytest.approx(10.0)


def test_calibration_cached_per_machine(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LLMSPEED_CACHE", str(tmp_path))
    calls = []
    fake = roofline.Calibration("cpu", torch.__version__, 1, 8, 20.0, 22.0, 150.0, 1.2)
    monkeypatch.setattr(roofline, "measure", lambda cfg=None: calls.append(1) or fake)
    a = roofline.load_or_measure()
    b = roofline.load_or_measure()
    assert a == b == fake and len(calls) == 1
    path = roofline.calibration_path()
    assert path.is_file() and json.loads(path.read_text())["calibration"]["sum_gbs"] == 22.0
    roofline.load_or_measure(recalibrate=True)
    assert len(calls) == 2
    assert fake.bandwidth_gbs == 22.0 and fake.bf16_slowdown == pytest.approx(125.0)


def test_measure_small_buffers_is_positive() -> None:
    cal = roofline.measure(roofline.CalibrationConfig(buffer_mib=8, repeats=1, matmul_size=64))
    assert cal.copy_gbs > 0 and cal.sum_gbs > 0 and cal.fp32_gflops > 0 and cal.bf16_gflops > 0


def _fig(**kw: float) -> Figures:
    base = dict(t_pre=0.001, t_prefill=0.1, t_decode=1.0, t_post=0.001, decode_steps=100,
                decode_bytes_per_step=100e6, decode_flops_per_step=0.3e9, prefill_flops=10e9,
                bandwidth_gbs=20.0, fp32_gflops=150.0, bf16_gflops=1.2)
    return Figures(**(base | kw))


def test_verdict_memory_bound() -> None:
    # 100 MB at 20 GB/s = 5 ms bound; step 10 ms = 2x -> memory-bound, 50% of bandwidth
    v = diagnose(_fig(t_decode=1.0, decode_steps=100, decode_bytes_per_step=100e6))
    assert v.bound == MEMORY and v.phase == "decode"
    assert v.decode_roofline_s == pytest.approx(0.005) and v.pct_of_bandwidth == pytest.approx(50.0)
    assert "int4-g32" in v.recipes


def test_verdict_overhead_bound() -> None:
    v = diagnose(_fig(t_decode=5.0))  # 50 ms/step vs 5 ms bound = 10x
    assert v.bound == OVERHEAD and v.roofline_ratio == pytest.approx(10.0)
    assert "compile" in v.recipes and "bigger batch" in v.recipes


def test_verdict_compute_bound_prefill_never_bf16_on_slow_bf16() -> None:
    # prefill dominates; 10 GFLOP in 0.1 s = 100 GFLOP/s = 67% of 150 -> compute-bound
    v = diagnose(_fig(t_prefill=0.1, t_decode=0.01, decode_steps=1))
    assert v.bound == COMPUTE and v.phase == "prefill"
    assert any("never bf16" in r for r in v.recipes)


def test_verdict_compute_bound_prefill_prefers_bf16_when_measured_faster() -> None:
    v = diagnose(_fig(t_prefill=0.1, t_decode=0.01, decode_steps=1, bf16_gflops=1500.0))
    assert v.bound == COMPUTE and any("bf16" in r and "faster" in r for r in v.recipes)


def test_verdict_compute_bound_decode() -> None:
    # huge FLOPs per step and few bytes: the FLOP roofline dominates
    v = diagnose(_fig(decode_bytes_per_step=1e6, decode_flops_per_step=1e9, t_decode=0.8, decode_steps=100))
    assert v.decode_bound == COMPUTE


def test_verdict_preprocessing_bound() -> None:
    v = diagnose(_fig(t_pre=2.0, t_post=0.5))
    assert v.bound == PREPROCESSING and v.phase == "pre/post"


def test_bad_figures_and_thresholds() -> None:
    with pytest.raises(ValueError):
        _fig(t_decode=-1.0)
    with pytest.raises(ValueError):
        _fig(bandwidth_gbs=0.0)
    with pytest.raises(ValueError):
        Thresholds(overhead_ratio=0.5)
