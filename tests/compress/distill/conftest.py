"""Fixtures for distillation tests: a 4-layer tiny Llama teacher, a short text from a calibration play, windows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import build_tiny_hf


@pytest.fixture(scope="session")
def tiny4(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_json: Path) -> Path:
    """A random-init 4-layer Llama (hidden 64, 4 heads / 2 KV heads, MLP 128) saved as a HF directory."""
    return build_tiny_hf(tmp_path_factory.mktemp("tiny4"), "llama", tiny_tokenizer_json, seed=1, num_hidden_layers=4)


@pytest.fixture(scope="session")
def small_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~20k characters of a calibration play (never a held-out one) as a UTF-8 file for --data."""
    from llmspeed.data.texts import CALIBRATION_PLAYS, read_play

    p = tmp_path_factory.mktemp("text") / "henry_v.txt"
    p.write_text(read_play(CALIBRATION_PLAYS[8])[5000:25000], encoding="utf-8")
    return p


@pytest.fixture(scope="session")
def windows(tiny4: Path, small_text: Path) -> torch.Tensor:
    """[16, 24] token windows of the small text (the tiny tokenizer)."""
    from llmspeed.compress.distill.data import token_windows
    from llmspeed.models.loading import load_model

    tok = load_model(tiny4).tokenizer
    return token_windows(tok, [("text", small_text.read_text())], 24).tokens[:16]


@pytest.fixture(autouse=True)
def _one_thread():
    """The tiny models' matmuls are microseconds: one thread avoids OpenMP barriers (slow on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
