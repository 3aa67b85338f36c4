"""`--draft` on the command line: it runs, reports acceptance, and bad values are one `error:` line, exit 2."""

from __future__ import annotations

import json

import pytest

from llmspeed.cli.main import main


def test_generate_with_ngram_draft(tiny_model_dir, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tiny_model_dir("llama"))
    prompt = "O Romeo, Romeo, wherefore art thou Romeo? O Romeo, Romeo, wherefore art thou"
    assert main(["generate", prompt, "--model", d, "--max-new-tokens", "12", "--ignore-eos", "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(["generate", prompt, "--model", d, "--max-new-tokens", "12", "--ignore-eos", "--json",
                 "--draft", "ngram:4"]) == 0
    spec = json.loads(capsys.readouterr().out)
    assert spec["token_ids"] == plain["token_ids"]
    assert main(["generate", prompt, "--model", d, "--max-new-tokens", "12", "--ignore-eos", "--draft", "ngram"]) == 0
    assert "accepted" in capsys.readouterr().err


@pytest.mark.parametrize("draft, needle", [
    ("ngram:0", "bad --draft"), ("ngram:x", "bad --draft"), ("ngram:99", "bad --draft"),
    ("/definitely/not/here", "not found"),
])
def test_bad_draft_is_one_error_line(tiny_model_dir, draft: str, needle: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "hi", "--model", str(tiny_model_dir("llama")), "--draft", draft]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and needle in err and len(err.strip().splitlines()) == 1


def test_draft_with_another_vocabulary_exits_2(tiny_model_dir, tiny_tokenizer_json, tmp_path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import build_tiny_hf

    other = build_tiny_hf(tmp_path / "v600", "llama", tiny_tokenizer_json, vocab_size=600)
    capsys.readouterr()  # the checkpoint writer's progress bar
    assert main(["generate", "hi", "--model", str(tiny_model_dir("llama")), "--draft", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "another tokenizer or vocabulary" in err


@pytest.mark.parametrize("cmd", [["serve", "--port", "1"], ["bench", "--baseline", "none"], ["profile"]])
def test_bad_draft_fails_before_work(cmd: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*cmd, "--draft", "ngram:-2"]) == 2
    assert "bad --draft" in capsys.readouterr().err
