"""`llmspeed bench`: models and baselines side by side, each in its own process; JSON, Markdown, PNG, HTML."""

from __future__ import annotations

import signal
import sys

import typer

from llmspeed.cli.common import DeviceOpt, ThreadsOpt, TpOpt


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


def bench(
    model: list[str] = typer.Option(["default"], "--model", "-m", help="model to measure (repeatable)"),
    baseline: list[str] = typer.Option(["hf"], "--baseline", help="hf | llamacpp | none (repeatable)"),
    scenarios: str = typer.Option("prefill512,decode_b1,decode_b8,decode_b32", "--scenarios",
                                  help="comma-separated: prefillN, decode_bB"),
    repeats: int = typer.Option(3, "--repeats", help="timed runs per scenario after one warm-up"),
    new_tokens: int = typer.Option(128, "--new-tokens", help="tokens generated per decode request (EOS ignored)"),
    prompt_len: int = typer.Option(128, "--prompt-len", help="prompt tokens of the decode scenarios"),
    threads: int = ThreadsOpt,
    tp: int = TpOpt,
    device: str = DeviceOpt,
    out: str = typer.Option("report", "--out", help="report directory (replaced atomically at the end)"),
    quality: bool = typer.Option(False, "--quality", help="add perplexity columns from llmspeed.evaluate"),
    timeout: float = typer.Option(3600.0, "--timeout", help="seconds allowed per model subprocess"),
    draft: str = typer.Option(None, "--draft", help="llmspeed rows decode speculatively: ngram[:k] or a draft "
                              "model directory (rows then report acceptance rate and mean accepted length)"),
) -> None:
    """Benchmark models against HF transformers and llama.cpp; write report.json/.md/.html and plots."""
    from llmspeed.bench.config import BenchConfig
    from llmspeed.bench.runner import run_bench

    cfg = BenchConfig(models=tuple(model), baselines=tuple(baseline),
                      scenarios=tuple(s.strip() for s in scenarios.split(",") if s.strip()), repeats=repeats,
                      prompt_len=prompt_len, new_tokens=new_tokens, threads=threads, tp=tp, device=device, out=out,
                      quality=quality, timeout_s=timeout, draft=draft)
    # SIGTERM -> SystemExit: the runner's cleanup removes its temp dir and subprocess.run kills the worker
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if sys.stderr.isatty():
        from rich.console import Console

        con = Console(stderr=True)
        with con.status("benchmarking...") as status:
            path = run_bench(cfg, progress=lambda msg: (status.update(msg), con.log(msg)))
    else:
        path = run_bench(cfg, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    sys.stdout.write((path / "report.md").read_text(encoding="utf-8"))
    sys.stdout.write(f"\nreport: {path / 'report.html'}\n")
