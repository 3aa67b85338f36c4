"""`llmspeed optimize --recipe R --out DIR`: compress, save, and print a before/after table."""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

import typer

from llmspeed.cli.common import ModelOpt, ThreadsOpt

log = logging.getLogger(__name__)
DEFAULT_RECIPE = "int8"  # why: docs/decisions.md, "Compression"


def register(app: typer.Typer) -> None:
    app.command("optimize")(optimize)


def _check_out(out: Path) -> None:
    from llmspeed.models.saved import is_saved_dir

    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not is_saved_dir(out))):
        raise ValueError(f"--out {out} exists and is not an llmspeed model directory: refusing to overwrite it")


def _compress(llm: Any, recipe: Any) -> list[Any]:
    """Apply the recipe step by step, with a rich progress bar on a terminal and log lines otherwise."""
    import llmspeed
    from llmspeed.compress.api import Recipe

    calib = None
    if recipe.needs_calibration:
        from llmspeed.compress.calibration import get_calibration

        calib = get_calibration(llm.tokenizer, max_len=llm.config.max_position)
    reports = []
    if not sys.stderr.isatty():
        for tok in recipe.steps:
            reports += llmspeed.compress_(llm, Recipe((tok,)), calib=calib)
            print(f"optimize: {reports[-1].summary()} ({reports[-1].seconds:.1f}s)", file=sys.stderr)
        return reports
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("compressing", total=len(recipe.steps))
        for tok in recipe.steps:
            bar.update(task, description=f"compressing: {tok}")
            reports += llmspeed.compress_(llm, Recipe((tok,)), calib=calib)
            bar.advance(task)
    return reports


def _quality(llm: Any, baseline: Any, eval_tokens: int) -> dict[str, Any] | None:
    """ΔPPL / KL / top-1 on the first `eval_tokens` held-out Shakespeare tokens (`llmspeed eval` does the rest)."""
    if importlib.util.find_spec("llmspeed.evaluation.api") is None:
        return None
    import llmspeed

    try:
        res = dict(llmspeed.evaluate(llm, baseline=baseline, max_tokens=eval_tokens, ood_max_tokens=0,
                                     lastword_n=0))
    except (ImportError, NotImplementedError) as e:
        log.warning("optimize: quality evaluation unavailable: %s", e)
        return None
    return res


def _pick(d: dict[str, Any], *keys: str) -> float | None:
    for k in keys:
        v = d.get(k)
        if isinstance(v, dict):
            v = v.get("mean")
        if isinstance(v, (int, float)):
            return float(v)
    return None


def _render(rows: list[dict[str, Any]], settings: dict[str, Any], reports: list[Any], out: Path,
            eval_tokens: int) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    t = Table(title=f"llmspeed optimize -> {out}")
    cols = ["model", "size MB", "decode tok/s", "prefill tok/s", "ΔPPL %", "KL", "top-1"]
    for c in cols:  # fits 80 columns; long notes go below the table
        t.add_column(c, justify="left" if c == "model" else "right", overflow="fold")

    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for r in rows:
        t.add_row(r["name"], f(r["size"], ".1f"), f(r["decode"], ".1f"), f(r["prefill"], ".0f"),
                  f(r.get("dppl"), "+.2f"), f(r.get("kl"), ".4f"), f(r.get("top1"), ".3f"))
    con.print(t)
    for r in rows:
        if r.get("note"):
            con.print(f"note ({r['name']}): {r['note']}")
    con.print(f"decode: prompt {settings['prompt_len']} + {settings['new_tokens']} new tokens, EOS ignored, batch 1; "
              f"prefill: {settings['prefill_len']} tokens; median of {settings['repeats']} after warm-up; "
              f"{settings['threads']} threads")
    if eval_tokens and rows[-1].get("kl") is not None:
        con.print(f"quality: first {eval_tokens} tokens of the held-out Shakespeare plays, non-overlapping windows; "
                  "KL(original || optimized) mean per token; full report: llmspeed eval")
    for rep in reports:
        con.print(f"  {rep.summary()}")


def optimize(
    recipe: str = typer.Option(DEFAULT_RECIPE, "--recipe", "-r", help="comma-joined steps, e.g. int8 or int4-g32"),
    out: Path = typer.Option(..., "--out", "-o", help="directory to write the optimized model to"),
    model: str = ModelOpt,
    threads: int = ThreadsOpt,
    repeats: int = typer.Option(3, "--repeats", help="timed runs per speed figure (median)"),
    new_tokens: int = typer.Option(64, "--new-tokens", help="decode tokens per timed run"),
    quality: bool = typer.Option(True, "--eval/--no-eval", help="ΔPPL, KL and top-1 vs the original, if available"),
    eval_tokens: int = typer.Option(4096, "--eval-tokens", help="held-out tokens for ΔPPL / KL / top-1"),
) -> None:
    """Compress a model with a recipe, save it, and compare size, speed and quality with the original."""
    import llmspeed
    from llmspeed.bench.quick import SpeedConfig, measure_speed, model_size_mb, slow_cause
    from llmspeed.compress.api import Recipe
    from llmspeed.models.spec import float_source
    from llmspeed.util.progress import heartbeat

    rec = Recipe.parse(recipe)  # bad recipe: one-line error, exit 2, nothing loaded or written
    speed_cfg = SpeedConfig(new_tokens=new_tokens, repeats=repeats)
    _check_out(out)
    llm = llmspeed.load(float_source(model), threads=threads)
    size0 = model_size_mb(llm.model)
    with heartbeat("optimize: measuring the original's speed"):
        base = measure_speed(llm, speed_cfg)
    reports = _compress(llm, rec)
    saved = llm.save(out)  # temp dir + rename inside: nothing at --out unless complete
    with heartbeat(f"optimize: measuring {rec}'s speed"):
        opt = measure_speed(llm, speed_cfg)
    rows = [{"name": f"{llm.source} (original)", "size": size0, "decode": base.decode_tok_s,
             "prefill": base.prefill_tok_s},
            {"name": str(rec), "size": model_size_mb(llm.model), "decode": opt.decode_tok_s,
             "prefill": opt.prefill_tok_s}]
    slower = [k for k, a, b in (("decode", opt.decode_tok_s, base.decode_tok_s),
                                ("prefill", opt.prefill_tok_s, base.prefill_tok_s)) if a < b]
    if slower:
        rows[1]["note"] = f"SLOWER than fp32 ({', '.join(slower)}): {slow_cause(list(rec.steps))}"
    if quality:
        baseline = llmspeed.load(float_source(model), threads=threads)
        with heartbeat(f"optimize: ΔPPL / KL / top-1 on {eval_tokens} held-out tokens"):
            q = _quality(llm, baseline, eval_tokens)
        if q is not None:
            ppl, ppl0 = _pick(q, "ppl"), _pick(q, "baseline_ppl", "ppl_baseline")
            rows[1]["dppl"] = _pick(q, "delta_ppl_pct", "ppl_increase_pct") or (
                100 * (ppl / ppl0 - 1) if ppl and ppl0 else None)
            rows[1]["kl"] = _pick(q, "kl_mean", "kl")
            rows[1]["top1"] = _pick(q, "top1_agreement", "top1")
        else:
            log.warning("optimize: llmspeed.evaluation not available yet: no quality columns")
    _render(rows, base.settings, reports, saved, eval_tokens if quality else 0)
