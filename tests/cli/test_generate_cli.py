"""`llmspeed generate`: output, JSON timings, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmspeed.cli.main import main


def test_generate_json(tiny_model_dir, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["generate", "Hello", "--model", str(tiny_model_dir("llama")), "--max-new-tokens", "5",
               "--ignore-eos", "--json"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["completion_tokens"] == 5
    assert set(data["timings"]) >= {"t_pre", "t_prefill", "t_decode", "t_post"}


def test_generate_streams_text(tiny_model_dir, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["generate", "Hello", "--model", str(tiny_model_dir("llama")), "--max-new-tokens", "5"])
    cap = capsys.readouterr()
    assert rc == 0 and "t_prefill" in cap.err


@pytest.mark.parametrize("args, needle", [
    (["generate", ""], "prompt is empty"),
    (["generate", "hi", "--model", "/definitely/not/here"], "model not found"),
    (["generate", "hi", "--max-new-tokens", "0"], "max-new-tokens"),
    (["generate", "hi", "--no-such-flag"], "No such option"),
    (["--prefill-path", "gpu", "generate", "hi"], "--prefill-path must be one of"),
])
def test_generate_errors_are_one_line(args: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_non_utf8_prompt_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "p.txt"
    f.write_bytes(b"\xff\xfe\x00bad")
    assert main(["generate", "--prompt-file", str(f)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "UTF-8" in err[0]


def test_prefill_path_flag_reaches_the_quantized_layers(tiny_model_dir, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("LLMSPEED_PREFILL", raising=False)
    seen: list[str] = []
    import llmspeed.runtime.plans as plans

    real = plans.plan_layers
    monkeypatch.setattr(plans, "plan_layers", lambda m, opts: seen.append(opts.prefill) or real(m, opts))
    rc = main(["--prefill-path", "fp32", "generate", "Hello", "--model", str(tiny_model_dir("llama")),
               "--recipe", "int8", "--max-new-tokens", "3", "--json"])
    assert rc == 0 and seen and set(seen) == {"fp32"}
    monkeypatch.delenv("LLMSPEED_PREFILL", raising=False)
