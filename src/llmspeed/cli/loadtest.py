"""`llmspeed loadtest URL`: drive a running server and report TTFT/TPOT/ITL/E2EL, throughput and goodput."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer


def register(app: typer.Typer) -> None:
    app.command("loadtest")(loadtest)


def loadtest(
    url: str = typer.Argument(..., help="server base URL, e.g. http://127.0.0.1:8000"),
    rate: float = typer.Option(None, "--rate", help="Poisson arrivals per second"),
    concurrency: int = typer.Option(None, "--concurrency", help="closed loop with this many clients"),
    duration: float = typer.Option(30.0, "--duration", help="seconds of arrivals"),
    requests: int = typer.Option(200, "--requests", help="at most this many requests"),
    max_tokens: int = typer.Option(64, "--max-tokens"),
    slo_ttft: float = typer.Option(1.0, "--slo-ttft", help="goodput SLO on TTFT, seconds"),
    slo_tpot: float = typer.Option(0.1, "--slo-tpot", help="goodput SLO on TPOT, seconds"),
    api_key: str = typer.Option(None, "--api-key", envvar="LLMSPEED_API_KEY"),
    model: str = typer.Option(None, "--model", help="model field of the requests (default: omitted)"),
    out: Path = typer.Option(None, "--out", help="write loadtest.json and loadtest.png here"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Load-test an OpenAI-compatible server with an FAQ-style prompt mix (streamed chat requests)."""
    from llmspeed.serving.loadtest import LoadTestConfig, run_loadtest

    if rate is None and concurrency is None:
        rate = 4.0
    cfg = LoadTestConfig(url=url, rate=rate, concurrency=concurrency, duration=duration, requests=requests,
                         max_tokens=max_tokens, slo_ttft=slo_ttft, slo_tpot=slo_tpot, api_key=api_key, model=model,
                         seed=seed)
    tty = sys.stderr.isatty()

    def progress(p: dict[str, Any]) -> None:
        if tty:
            sys.stderr.write(f"\r{p['elapsed']:6.1f}s  sent {p['sent']:4d}  done {p['done']:4d}  "
                             f"errors {p['errors']:3d}")
            sys.stderr.flush()

    s = run_loadtest(cfg, out, progress)
    if tty:
        sys.stderr.write("\n")
    lat = s["latency_s"]

    def ms(name: str, p: str) -> str:
        v = lat[name][p]
        return "-" if v is None else f"{v * 1e3:.1f}"

    lines = [f"requests {s['completed']}/{s['requests']} ok, {s['errors']} errors in {s['wall_s']:.1f} s",
             f"throughput {s['req_per_s']:.2f} req/s, {s['output_tok_per_s']:.1f} output tok/s; goodput "
             f"{s['goodput_req_per_s']:.2f} req/s ({s['slo_attainment']:.0%} within TTFT<={slo_ttft}s, "
             f"TPOT<={slo_tpot}s)",
             f"{'ms':6s} {'p50':>9s} {'p90':>9s} {'p99':>9s}"]
    lines += [f"{n.upper():6s} {ms(n, 'p50'):>9s} {ms(n, 'p90'):>9s} {ms(n, 'p99'):>9s}"
              for n in ("ttft", "tpot", "itl", "e2el")]
    lines.append(f"response cache: {json.dumps(s['response_cache'])}")
    if s["error_examples"]:
        lines.append(f"errors e.g.: {s['error_examples'][0]}")
    if out is not None:
        lines.append(f"wrote {', '.join(s['outputs'])}")
    sys.stdout.write("\n".join(lines) + "\n")
