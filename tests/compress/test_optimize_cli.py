"""`llmspeed optimize`: bad input writes nothing (exit 2); a good run saves a loadable compressed model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import llmspeed
from llmspeed.cli.main import main


@pytest.mark.parametrize("recipe", ["int4-g33", "nonsense", "int8,,bf16"])
def test_bad_recipe_exit_2_nothing_written(tmp_path: Path, recipe: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["optimize", "--recipe", recipe, "--out", str(out)]) == 2
    assert not out.exists() and list(tmp_path.iterdir()) == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


def test_recipe_the_model_cannot_take_writes_nothing(tmp_path: Path, tiny_model_dir) -> None:
    """g128 does not divide the tiny model's K = 64: compression fails after loading, still nothing at --out."""
    out = tmp_path / "out"
    rc = main(["optimize", "--recipe", "int4-g128", "--out", str(out), "--model", str(tiny_model_dir("llama")),
               "--repeats", "1", "--new-tokens", "2", "--no-eval"])
    assert rc == 2 and not out.exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())  # no temp dir left behind


def test_refuses_to_overwrite_foreign_dir(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("user data")
    assert main(["optimize", "--recipe", "int8", "--out", str(tmp_path)]) == 2
    assert (tmp_path / "keep.txt").read_text() == "user data"


def test_optimize_tiny_model(tmp_path: Path, tiny_model_dir, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "opt"
    src = str(tiny_model_dir("llama"))
    rc = main(["optimize", "--recipe", "int4-g32", "--out", str(out), "--model", src, "--repeats", "1",
               "--new-tokens", "2", "--eval-tokens", "300"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "size MB" in text and "int4-g32" in text
    assert "quality: first 300 tokens" in text  # ΔPPL / KL / top-1 columns were filled
    llm = llmspeed.load(out)
    assert llm.recipe == ["int4-g32-asym"]  # the explicit grid is recorded
    ids = torch.arange(10).unsqueeze(0)
    ref = llmspeed.load(src)
    llmspeed.compress_(ref, "int4-g32", progress=False)
    assert torch.equal(llm.logits(ids), ref.logits(ids))
