"""`export(model, fmt, out)`: write to a temp path beside `out`, rename at the end."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

FORMATS = ("hf", "gguf")
DTYPES = ("f32", "f16")


def export(model: Any, fmt: str, out: str | Path, dtype: str = "f32") -> Path:
    """Export an llmspeed.LLM (or a model name/path to load) as `fmt` ("hf" directory or "gguf" file)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown export dtype {dtype!r}; known: {', '.join(DTYPES)}")
    if fmt == "hf" and dtype != "f32":
        raise ValueError("--dtype applies to gguf only; hf export writes float32")
    if isinstance(model, (str, Path)):
        import llmspeed

        model = llmspeed.load(model)
    if fmt == "gguf" and model.config.arch != "llama":
        raise ValueError(f"GGUF export supports the llama architecture only, not {model.config.arch!r}; "
                         "use --format hf")
    dest = Path(out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "hf":
        if dest.exists() and not dest.is_dir():
            raise ValueError(f"--out {dest} exists and is not a directory")
        from llmspeed.export.hf import write_hf_dir
        from llmspeed.util.atomic import write_dir_atomically

        return write_dir_atomically(dest, lambda tmp: write_hf_dir(model, tmp))
    if dest.is_dir():
        raise ValueError(f"--out {dest} is a directory; GGUF export writes one file (e.g. model.gguf)")
    from llmspeed.export.gguf import write_gguf

    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.tmp-", dir=dest.parent)
    os.close(fd)
    try:
        write_gguf(model, Path(name), dtype)
        os.chmod(name, 0o644)  # mkstemp creates 0600
        os.replace(name, dest)
    finally:
        if os.path.exists(name):
            os.unlink(name)
    return dest
