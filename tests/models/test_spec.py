"""`--model` values: one parser for every command and serving mode; `default` is the GGUF as shipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmspeed.models.spec import describe, float_source, parse_model_spec


def test_default_is_the_shipped_blocks() -> None:
    assert parse_model_spec("default").form == "native"
    assert parse_model_spec("default:native").form == "native"
    assert parse_model_spec("default:fp32").form == "fp32"
    assert "as shipped" in describe("default") and "float32" in describe("default:fp32")
    assert float_source("default") == "default:fp32"  # a recipe compresses the float weights
    assert float_source("default:native") == "default:native"  # unless the blocks are asked for


def test_directories_and_errors(tmp_path: Path) -> None:
    assert parse_model_spec(str(tmp_path)).kind == "dir"
    assert float_source(str(tmp_path)) == str(tmp_path)
    with pytest.raises(FileNotFoundError, match="model not found"):
        parse_model_spec(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"applies to 'default' or a \.gguf"):
        parse_model_spec(f"{tmp_path}:native")
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="unsupported model file"):
        parse_model_spec(str(tmp_path / "w.bin"))


def test_a_q4_gguf_is_native_by_default() -> None:
    from llmspeed.models.default_model import default_gguf_path

    g = str(default_gguf_path())
    assert parse_model_spec(g).form == "native" and parse_model_spec(g + ":fp32").form == "fp32"
