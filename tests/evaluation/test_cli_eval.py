"""`llmspeed eval`: JSON output on a tiny model, one-line errors for bad text files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmspeed.cli.main import main


def test_eval_json_tiny(tiny_model_dir, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tiny_model_dir("llama"))
    code = main(["eval", "--model", d, "--baseline", d, "--max-tokens", "200", "--ood-max-tokens", "64",
                 "--lastword-n", "4", "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    # two separate loads of the same weights: equal up to kernel-path rounding (same object: exactly 0, test_metrics)
    assert 0.0 <= res["kl_mean"] < 1e-6 and res["top1_agreement"] == 1.0 and res["n_tokens"] == 200


def test_eval_table_renders(tiny_model_dir, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tiny_model_dir("llama"))
    assert main(["eval", "--model", d, "--baseline", "none", "--max-tokens", "100", "--ood-max-tokens", "0",
                 "--lastword-n", "3"]) == 0
    out = capsys.readouterr().out
    assert "PPL (shakespeare)" in out and "last-word accuracy" in out


def test_eval_bad_text_file_is_one_line_exit_2(tiny_model_dir, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x.txt"
    bad.write_bytes(b"\xff\xfe\x00bad")
    assert main(["eval", "--model", str(tiny_model_dir("llama")), "--text", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "UTF-8" in err and "\n" not in err
