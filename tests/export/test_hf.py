"""HF export: dense and int8-compressed tiny models load in transformers with llmspeed's logits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import llmspeed
from llmspeed.cli.main import main
from llmspeed.export import export

IDS = torch.tensor([[5, 17, 300, 42, 7, 99, 260, 11, 3, 400, 128, 64]])


def _hf_logits(path: Path) -> torch.Tensor:
    import transformers as tf

    m = tf.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return m(IDS).logits.float()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_hf_export_dense_matches(tiny_model_dir: Callable[..., Path], tmp_path: Path, arch: str) -> None:
    llm = llmspeed.load(tiny_model_dir(arch))
    out = export(llm, "hf", tmp_path / "hf")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in out.iterdir()}
    ref = llm.logits(IDS)
    got = _hf_logits(out)
    assert (got - ref).abs().max().item() < 1e-3
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    assert tok.encode("To be, or not to be") == llm.tokenizer.encode("To be, or not to be", add_special_tokens=False)


def test_hf_export_int8_matches_compressed(tiny_llm: llmspeed.LLM, tmp_path: Path) -> None:
    from llmspeed.runtime.plans import reference_paths

    llmspeed.compress_(tiny_llm, "int8")
    with reference_paths(tiny_llm.model):  # float32 GEMMs on the dequantized weights: what transformers runs
        ref = tiny_llm.logits(IDS)
    fast = tiny_llm.logits(IDS)  # 12 rows on the int8 decode kernel (activations rounded to int8 per 32)
    out = export(tiny_llm, "hf", tmp_path / "hf8")
    got = _hf_logits(out)
    assert torch.allclose(got, ref, atol=1e-4), (got - ref).abs().max().item()
    assert torch.equal(got.argmax(-1), ref.argmax(-1))
    assert (got - fast).abs().max().item() < 5e-2  # the kernel's activation rounding stays small


def test_hf_export_cli_and_bad_format(tiny_model_dir: Callable[..., Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli-hf"
    assert main(["export", "--model", str(tiny_model_dir("llama")), "--format", "hf", "--out", str(out)]) == 0
    assert (out / "model.safetensors").is_file()
    bad = tmp_path / "bad"
    assert main(["export", "--model", str(tiny_model_dir("llama")), "--format", "onnx", "--out", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: unknown export format 'onnx'")
    assert not bad.exists()
    with pytest.raises(ValueError, match="unknown export format"):
        export(llmspeed.load(tiny_model_dir("llama")), "safetensors", tmp_path / "x")


def test_hf_export_structural_recipes(tiny_llm: llmspeed.LLM, tmp_path: Path) -> None:
    """Structured pruning exports its new shapes; low-rank pairs are multiplied out (float32: 1e-3)."""
    llmspeed.compress_(tiny_llm, "prune-heads-50,prune-mlp-50,svd-r16")  # one calibration pass
    cfg = tiny_llm.config
    assert (cfg.n_heads, cfg.intermediate_size) == (2, 64)
    ref = tiny_llm.logits(IDS)
    out = export(tiny_llm, "hf", tmp_path / "hf")
    got = _hf_logits(out)
    assert (got - ref).abs().max().item() < 1e-3
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert not any(k.endswith((".down.weight", ".up.weight")) for k in f.keys())  # low-rank multiplied out
