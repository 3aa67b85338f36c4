"""Directories saved by llmspeed before the layering change (issue 17) load unchanged and give the same logits.

The fixtures in tests/fixtures/saved_v1/ were written by tests/fixtures/make_saved_v1.py on commit 3568fb3 with the
float32 prefill path; each holds the logits that code computed for fixed input ids. Same machine: identical; another
CPU's float32 GEMM may sum in another order, hence the 1e-4 absolute bound (logits are O(1)-O(10)).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import llmspeed

SAVED = Path(__file__).resolve().parent.parent / "fixtures" / "saved_v1"
NAMES = sorted(p.name for p in SAVED.iterdir() if p.is_dir())


def test_fixtures_present() -> None:
    assert len(NAMES) >= 6, NAMES


@pytest.mark.parametrize("name", NAMES)
def test_saved_v1_loads_with_same_logits(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMSPEED_PREFILL", "fp32")  # the path the fixtures were computed on
    d = SAVED / name
    llm = llmspeed.load(d)
    assert llm.recipe == json.loads((d / "recipe.json").read_text())["steps"]  # tokens keep their meaning
    exp = load_file(str(d / "expected.safetensors"))
    got = llm.logits(exp["input_ids"])  # [B, T, V]
    assert got.shape == exp["logits"].shape
    torch.testing.assert_close(got.float(), exp["logits"], rtol=0, atol=1e-4)
    assert torch.equal(got.argmax(-1), exp["logits"].argmax(-1))
