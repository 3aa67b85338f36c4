"""`llmspeed generate`: stream a completion to the terminal, or print JSON with per-stage timings."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from llmspeed.cli.common import DeviceOpt, DraftOpt, DtypeOpt, ModelOpt, ThreadsOpt, TpOpt, load_llm, read_text_file


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)


def generate(
    prompt: str = typer.Argument(None, help="prompt text (or use --prompt-file)"),
    prompt_file: Path = typer.Option(None, "--prompt-file", help="read the prompt from a UTF-8 file"),
    model: str = ModelOpt,
    recipe: str = typer.Option(None, "--recipe", help="compress in memory first, e.g. int8"),
    dtype: str = DtypeOpt,
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="cap on generated tokens (stops at EOS)"),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy"),
    top_k: int = typer.Option(0, "--top-k"),
    top_p: float = typer.Option(1.0, "--top-p"),
    seed: int = typer.Option(None, "--seed"),
    stop: list[str] = typer.Option(None, "--stop", help="stop string (repeatable)"),
    ignore_eos: bool = typer.Option(False, "--ignore-eos", help="generate exactly --max-new-tokens"),
    chat: bool = typer.Option(False, "--chat", help="wrap the prompt in the model's chat template"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object with text and timings"),
    threads: int = ThreadsOpt,
    tp: int = TpOpt,
    device: str = DeviceOpt,
    draft: str = DraftOpt,
) -> None:
    """Generate text with llmspeed's engine (greedy unless --temperature)."""
    if prompt_file is not None:
        prompt = read_text_file(prompt_file)
    if not prompt:
        raise ValueError("prompt is empty: pass a prompt or --prompt-file")
    if max_new_tokens <= 0:
        raise ValueError(f"--max-new-tokens must be > 0, got {max_new_tokens}")
    llm = load_llm(model, dtype, threads, recipe, tp, device, draft)
    try:
        _run(llm, prompt, model, as_json, dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                                              top_p=top_p, seed=seed, stop=stop or None, ignore_eos=ignore_eos,
                                              chat=chat))
    finally:
        llm.close()  # a tensor-parallel group's followers stop with it


def _run(llm: Any, prompt: str, model: str, as_json: bool, kw: dict[str, Any]) -> None:
    if as_json:
        out = llm.generate(prompt, **kw)[0]
        sys.stdout.write(json.dumps({"prompt": prompt, "model": model, **out.to_dict()}, indent=2) + "\n")
        return
    out_stream = sys.stdout
    for piece in llm.stream(prompt, **kw):
        out_stream.write(piece)
        out_stream.flush()
    out_stream.write("\n")
    o = llm.last_output
    assert o is not None
    t = o.timings
    n = len(o.token_ids)
    tpot = t["t_decode"] / max(n - 1, 1)
    sys.stderr.write(
        f"[{len(o.prompt_token_ids)} prompt + {n} new tokens, finish={o.finish_reason}] "
        f"t_pre {t['t_pre'] * 1e3:.1f} ms | t_prefill {t['t_prefill'] * 1e3:.1f} ms | "
        f"t_decode {t['t_decode'] * 1e3:.1f} ms ({1 / tpot if tpot else 0:.1f} tok/s) | "
        f"t_post {t['t_post'] * 1e3:.1f} ms\n")
    if t.get("spec_draft_tokens"):
        label = llm.draft.label if llm.draft else "?"
        sys.stderr.write(f"[draft {label}: {t['spec_accepted_tokens']:.0f}/{t['spec_draft_tokens']:.0f} proposed tokens "
                         f"accepted ({t['spec_accepted_tokens'] / t['spec_draft_tokens']:.0%}), mean accepted length "
                         f"{(t['spec_accepted_tokens'] + t['spec_verifies']) / t['spec_verifies']:.2f} per verify]\n")
