"""`llmspeed eval`: perplexity (held-out plays + pydoc), KL / top-1 agreement vs a baseline, last-word accuracy."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from llmspeed.cli.common import DeviceOpt, DtypeOpt, ModelOpt, ThreadsOpt, load_llm


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)


def eval_cmd(
    model: str = ModelOpt,
    recipe: str = typer.Option(None, "--recipe", help="compress in memory first, e.g. int8"),
    baseline: str = typer.Option("default", "--baseline", help="default | none | PATH (the original model)"),
    text: str = typer.Option("shakespeare", "--text", help="shakespeare (held-out plays) | pydoc | FILE"),
    max_tokens: int = typer.Option(16384, "--max-tokens", help="perplexity over N tokens (equal shares per play)"),
    ood_max_tokens: int = typer.Option(8192, "--ood-max-tokens", help="pydoc tokens (0 = skip)"),
    lastword_n: int = typer.Option(300, "--lastword-n", help="last-word passages (0 = skip)"),
    dtype: str = DtypeOpt,
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    threads: int = ThreadsOpt,
    device: str = DeviceOpt,
    workers: int = typer.Option(1, "--workers", help="split the windows over N CPU processes (same results)"),
) -> None:
    """Measure what a model (or a recipe) costs in quality, against the original."""
    from llmspeed.data.texts import resolve_text
    from llmspeed.evaluation.api import EvalConfig, evaluate

    EvalConfig(max_tokens=max_tokens, ood_max_tokens=ood_max_tokens, lastword_n=lastword_n)  # validate first
    src = resolve_text(text)  # bad file / non-UTF-8 -> ValueError before any model loads
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if workers > 1 and device != "cpu":
        raise ValueError("--workers splits the evaluation over CPU processes: use it with --device cpu")
    llm = load_llm(model, dtype, threads, recipe, device=device)
    from llmspeed.util.progress import heartbeat

    with heartbeat("eval"):
        res = evaluate(llm, baseline=baseline, text=src, max_tokens=max_tokens, ood_max_tokens=ood_max_tokens,
                       lastword_n=lastword_n, workers=workers)
    res["model"] = model
    if as_json:
        sys.stdout.write(json.dumps(res, indent=2, default=str) + "\n")
        return
    _render(res, baseline)


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def _render(res: dict[str, Any], baseline: str) -> None:
    from rich.console import Console
    from rich.table import Table

    has_base = "baseline_ppl" in res
    title = f"llmspeed eval: {res['model']}" + (f" (recipe {res['recipe']})" if res.get("recipe") else "")
    t = Table(title=title)
    t.add_column("metric")
    t.add_column("model", justify="right")
    if has_base:
        t.add_column(f"baseline ({baseline})", justify="right")
        t.add_column("change", justify="right")
    t.add_column("measured on")

    def row(name: str, v: Any, b: Any = None, change: str = "", on: str = "", spec: str = ".3f") -> None:
        cells = [name, _fmt(v, spec)] + ([_fmt(b, spec), change] if has_base else []) + [on]
        t.add_row(*cells)

    plays = ", ".join(f"{k} {v}" for k, v in res["parts"].items())
    row(f"PPL ({res['text']})", res["ppl"], res.get("baseline_ppl"),
        f"{res['delta_ppl_pct']:+.2f}%" if has_base else "", f"{res['n_tokens']} tokens [{plays}]")
    if "ppl_ood" in res:
        b = res.get("baseline_ppl_ood")
        row("PPL (pydoc, out-of-domain)", res["ppl_ood"], b,
            f"{100 * (res['ppl_ood'] / b - 1):+.2f}%" if b else "", f"{res['ood']['n_tokens']} tokens")
    if has_base:
        on = f"{res['kl_tokens']} tokens of {res['text']}"
        row("KL(orig ‖ opt) mean, nats", res["kl_mean"], None, "", on, ".5f")
        row("KL(orig ‖ opt) p99, nats", res["kl_p99"], None, "", on, ".5f")
        row("top-1 agreement", res["top1_agreement"], None, "", on, ".4f")
    if "lastword_accuracy" in res:
        lw = res["lastword"]
        b = res.get("baseline_lastword_accuracy")
        row("last-word accuracy", res["lastword_accuracy"], b,
            f"{100 * (res['lastword_accuracy'] - b):+.1f} pt" if b is not None else "",
            f"{lw['n_passages']} passages, {lw['context_tokens']}-token context", ".4f")
    con = Console()
    con.print(t)
    con.print(f"[dim]PPL convention: {res['convention']}. {res['seconds']:.1f} s.[/dim]")
