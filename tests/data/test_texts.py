"""By-play split, text sources and their error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmspeed.data import texts as datasets


def test_calibration_and_eval_plays_are_disjoint_modern_spelling_plays() -> None:
    cal, ev = set(datasets.CALIBRATION_PLAYS), set(datasets.EVAL_PLAYS)
    assert not cal & ev
    avail = set(datasets.available_plays())
    assert cal <= avail and ev <= avail
    for p in cal | ev:
        assert (datasets.texts_dir() / f"{p}_gut.txt").is_file()
        assert not p.endswith("_f")
    names = [n for n, _ in datasets.eval_plays().parts]
    assert names == list(datasets.EVAL_PLAYS)


def test_pydoc_topics_is_out_of_domain_text() -> None:
    src = datasets.pydoc_topics()
    assert len(src.parts) > 50 and len(src.text) > 100_000
    assert "def" in src.text and "Hamlet" not in src.text


def test_text_file_errors_are_one_clear_valueerror(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok \xff\xfe not utf8")
    with pytest.raises(ValueError, match="not valid UTF-8"):
        datasets.resolve_text(bad)
    with pytest.raises(ValueError, match="not found"):
        datasets.resolve_text(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="not a regular file"):
        datasets.resolve_text(tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        datasets.resolve_text(empty)
    good = tmp_path / "good.txt"
    good.write_text("To be, or not to be.", encoding="utf-8")
    assert datasets.resolve_text(good).text == "To be, or not to be."
