"""JSONL objects with `file:line` errors."""

from __future__ import annotations

import pytest

from llmspeed.util.jsonl import read_objects


def test_objects_with_their_lines(tmp_path) -> None:
    f = tmp_path / "a.jsonl"
    f.write_text('{"a": 1}\n\n{"b": 2}\n')
    assert list(read_objects(f, "--x")) == [(f"{f}:1", {"a": 1}), (f"{f}:3", {"b": 2})]


@pytest.mark.parametrize("text", ['{"a": 1}\n[1, 2]\n', '{"a": 1}\n{oops\n'])
def test_bad_line_is_named(tmp_path, text: str) -> None:
    f = tmp_path / "a.jsonl"
    f.write_text(text)
    with pytest.raises(ValueError, match=rf"{f}:2: not a JSON object"):
        list(read_objects(f, "--x"))


def test_missing_file_names_the_flag(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="--prompts file not found"):
        list(read_objects(tmp_path / "nope.jsonl", "--prompts"))
