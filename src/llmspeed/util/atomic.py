"""Atomic writes: a file or a directory appears complete or not at all (a crash never leaves a trusted partial)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_dir_atomically(dest: Path, write: Callable[[Path], None], keep_existing: bool = False) -> Path:
    """Run `write(tmp)` into a temp dir beside `dest`, then put it in place of `dest`.

    `keep_existing=True`: if `dest` appears meanwhile (another process won the race), keep that one. Otherwise an
    existing `dest` is replaced: it is first renamed aside, so at every moment `dest` is either old or new.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    old: Path | None = None
    try:
        write(tmp)
        if dest.exists():
            if keep_existing:
                return dest
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.rename(dest, old)
        try:
            os.rename(tmp, dest)
        except OSError:
            if keep_existing and dest.exists():
                return dest
            if old is not None:
                os.rename(old, dest)
                old = None
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return dest


def write_text_atomically(path: Path, text: str) -> None:
    """Write a small file through a temp file in the same directory + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
