"""`llmspeed export --model M --format hf|gguf --out PATH`: dense HF directory or GGUF file."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from llmspeed.cli.common import ModelOpt, ThreadsOpt


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)


def export_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="HF directory (hf) or .gguf file (gguf) to write"),
    fmt: str = typer.Option("hf", "--format", "-f", help="hf (dense float32 safetensors) or gguf (llama only)"),
    model: str = ModelOpt,
    dtype: str = typer.Option("f32", "--dtype", help="gguf float tensors: f32 or f16 (int8 layers become Q8_0)"),
    recipe: str = typer.Option("", "--recipe", "-r", help="compress first with this recipe (e.g. int8)"),
    threads: int = ThreadsOpt,
) -> None:
    """Export a model (an llmspeed-saved compressed one too) for Hugging Face transformers or llama.cpp."""
    from llmspeed.cli.common import load_llm
    from llmspeed.export.api import DTYPES, FORMATS, export

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown --dtype {dtype!r}; known: {', '.join(DTYPES)}")
    llm = load_llm(model, threads=threads, recipe=recipe or None)
    path = export(llm, fmt, out, dtype=dtype)
    print(f"exported {fmt} -> {path}", file=sys.stderr)
