"""Options and helpers shared by the commands."""

from __future__ import annotations

from pathlib import Path

import typer

MODEL_HELP = ("default (embedded SmolLM2-135M-Instruct as shipped: int4 GGUF blocks; default:fp32 = float32), "
              "a HF model dir, a .gguf file[:native|:fp32], or an llmspeed-saved dir")
ModelOpt = typer.Option("default", "--model", "-m", help=MODEL_HELP)
ThreadsOpt = typer.Option(None, "--threads", help="torch threads (default: physical cores; per rank under --tp)")
DeviceOpt = typer.Option("cpu", "--device", help="cpu | cuda | cuda:N | auto (CUDA when a GPU is present)")
DtypeOpt = typer.Option("auto", "--dtype", help="auto (float32 on cpu, bfloat16 on cuda) | float32 | bfloat16 | float16")
TpOpt = typer.Option(1, "--tp", help="tensor-parallel ranks (processes on 127.0.0.1, torch.distributed; float weights)")
DRAFT_HELP = ("speculative decoding: ngram[:k] (prompt lookup, k proposals per step, default 8) or a draft model "
              "directory sharing the tokenizer (DIR[:k]); greedy output is unchanged")
DraftOpt = typer.Option(None, "--draft", help=DRAFT_HELP)


def read_text_file(path: Path) -> str:
    """Read a UTF-8 text file, with a one-line error for the usual mistakes."""
    if not path.exists():
        raise FileNotFoundError(f"file not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a text file")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not valid UTF-8 (byte {e.start}): pass a UTF-8 text file") from None


def load_llm(model: str, dtype: str = "float32", threads: int | None = None, recipe: str | None = None,
             tp: int = 1, device: str = "cpu", draft: str | None = None):
    import llmspeed

    return llmspeed.load(model, dtype=dtype, threads=threads, recipe=recipe, tp=tp, device=device, draft=draft)
