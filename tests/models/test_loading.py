"""Loading paths, the GGUF conversion cache, save/load identity and bad-input errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import llmspeed
from llmspeed.models.gguf_file import unpermute_qk


def test_unpermute_inverts_llama_cpp_permute() -> None:
    def permute(w: torch.Tensor, n_head: int) -> torch.Tensor:  # llama.cpp convert_hf_to_gguf's permute
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    w = torch.randn(192, 576)
    assert torch.equal(unpermute_qk(permute(w, 3), 3), w)
    assert not torch.equal(permute(w, 3), w)


def test_save_load_identity(tiny_llm, tmp_path: Path) -> None:
    out = tiny_llm.save(tmp_path / "saved")
    assert {"model.safetensors", "config.json", "recipe.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    again = llmspeed.load(out)
    ids = torch.randint(0, 512, (1, 20))
    assert torch.equal(tiny_llm.logits(ids), again.logits(ids))
    assert json.loads((out / "recipe.json").read_text())["steps"] == []


def test_missing_and_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model not found"):
        llmspeed.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a model directory"):
        llmspeed.load(tmp_path / "empty")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="unsupported model file"):
        llmspeed.load(tmp_path / "x.txt")


def test_unsupported_architecture(tiny_model_dir, tmp_path: Path) -> None:
    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir("llama"), d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "mamba"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unsupported architecture"):
        llmspeed.load(d)


def test_truncated_safetensors(tiny_model_dir, tmp_path: Path) -> None:
    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir("llama"), d)
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(ValueError, match="unreadable weights"):
        llmspeed.load(d)


def test_truncated_gguf_errors_and_leaves_no_cache_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmspeed.models.default_model import default_gguf_path

    monkeypatch.setenv("LLMSPEED_CACHE", str(tmp_path / "cache"))
    src = default_gguf_path()
    bad = tmp_path / "trunc.gguf"
    with open(src, "rb") as f:
        bad.write_bytes(f.read(3_000_000))
    with pytest.raises(ValueError, match="GGUF"):
        llmspeed.load(bad)
    models = tmp_path / "cache" / "models"
    assert not models.exists() or not [p for p in models.iterdir() if not p.name.startswith(".")]


@pytest.mark.slow
def test_gguf_conversion_cache_roundtrip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Converted cache entry == direct dequantization; an interrupted conversion is never trusted."""
    from llmspeed.models import default_model
    from llmspeed.models.gguf_file import gguf_config, gguf_state_dict, open_gguf

    monkeypatch.setenv("LLMSPEED_CACHE", str(tmp_path / "cache"))
    src = default_model.default_gguf_path()
    # simulate a crash halfway: a leftover temp dir must not be picked up
    (tmp_path / "cache" / "models" / ".tmp-crashed").mkdir(parents=True)
    entry = default_model.converted_gguf_dir(src)
    assert entry.parent == tmp_path / "cache" / "models" and not entry.name.startswith(".")
    llm = llmspeed.load(f"{src}:fp32")  # a Q4 GGUF loads as shipped unless the float32 form is asked for
    reader = open_gguf(src)
    sd = gguf_state_dict(reader, gguf_config(reader))
    ours = llm.model.state_dict()
    for k in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.29.mlp.down_proj.weight"):
        assert torch.equal(ours[k], sd[k]), k
    # a second load hits the cache (same directory, no re-conversion)
    assert default_model.converted_gguf_dir(src) == entry
