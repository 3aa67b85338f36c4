"""Line-numbered JSON objects from a JSONL file, with errors that name `file:line`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def read_objects(path: str | Path, flag: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(`file:line` prefix, object) for every non-blank line; `flag` names the option in the missing-file error."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{flag} file not found: {p}")
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise ValueError(f"{p}:{i}: not a JSON object") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{p}:{i}: not a JSON object")
        yield f"{p}:{i}", obj
