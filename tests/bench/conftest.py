"""One small bench run on the tiny model, shared by the report tests (each model runs in a subprocess)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_report(tiny_model_dir: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llmspeed.bench.config import BenchConfig
    from llmspeed.bench.runner import run_bench

    out = tmp_path_factory.mktemp("bench") / "report"
    cfg = BenchConfig(models=(str(tiny_model_dir("llama")),), baselines=("hf", "llamacpp"),
                      scenarios=("prefill16", "decode_b1", "decode_b2"), repeats=2, prompt_len=12, new_tokens=4,
                      out=str(out), calibrate=False, timeout_s=300)
    return run_bench(cfg)
