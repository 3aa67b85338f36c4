"""`llmspeed profile`: where one request's time goes, the hot ops, the roofline and a verdict."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import typer

from llmspeed.cli.common import DeviceOpt, DraftOpt, DtypeOpt, ModelOpt, ThreadsOpt


def register(app: typer.Typer) -> None:
    app.command("profile")(profile)


def profile(
    model: str = ModelOpt,
    recipe: str = typer.Option(None, "--recipe", help="compress in memory first, e.g. int8"),
    dtype: str = DtypeOpt,
    prompt_len: int = typer.Option(128, "--prompt-len", help="prompt tokens"),
    new_tokens: int = typer.Option(128, "--new-tokens", help="generated tokens (EOS ignored)"),
    batch: int = typer.Option(1, "--batch", help="concurrent identical requests"),
    repeats: int = typer.Option(3, "--repeats", help="timed runs after one warm-up (median reported)"),
    threads: int = ThreadsOpt,
    device: str = DeviceOpt,
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    trace: Path = typer.Option(None, "--trace", help="write a Chrome trace of the profiled decode steps"),
    name_kernels: bool = typer.Option(False, "--name-kernels", help="compile decode graphs with inductor's kernel "
                                      "profiling so their fused C++ kernels count as named compute (a slower build)"),
    recalibrate: bool = typer.Option(False, "--recalibrate", help="measure bandwidth and FLOP/s again, and the "
                                     "quantized layers' decode/prefill paths (runtime/phase.py)"),
    draft: str = DraftOpt,
) -> None:
    """Profile one request: T = t_pre + t_prefill + t_decode + t_post, hot ops, roofline verdict."""
    from llmspeed.profiling.runner import ProfileConfig, run_profile
    from llmspeed.runtime.device import resolve_device

    if resolve_device(device).type != "cpu":
        raise ValueError(f"profile's roofline and op profile are calibrated for the CPU; --device {device} is not "
                         "supported by profile yet (generate, serve, eval and bench run on it)")

    cfg = ProfileConfig(prompt_len=prompt_len, new_tokens=new_tokens, batch=batch, repeats=repeats,
                        trace_path=str(trace) if trace else None, recalibrate=recalibrate)
    if trace is not None and not trace.parent.exists():
        raise FileNotFoundError(f"--trace directory does not exist: {trace.parent}")
    if name_kernels:
        # a compiled decode graph's C++ kernels then show up in the profiler as `cpp_fused_*` compute ops (instead of
        # hiding in the graph call's self time, counted as overhead); off by default: the instrumented package is
        # another, slower build (measured 13.8 vs 8.3 ms a step with `speed`), so T would not be the served step's
        os.environ["TORCHINDUCTOR_CPP_ENABLE_KERNEL_PROFILE"] = "1"
    if recalibrate:
        from llmspeed.runtime.phase import forget_plans

        forget_plans()
    llm = _load(model, dtype, threads, recipe, draft)
    from llmspeed.util.progress import heartbeat

    with heartbeat("profile"):
        report = run_profile(llm, cfg)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")
        return
    render(report)


def _load(model: str, dtype: str, threads: int | None, recipe: str | None, draft: str | None) -> Any:
    from llmspeed.cli.common import load_llm

    return load_llm(model, dtype, threads, recipe, draft=draft)


def render(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    st, dec, v, cal = r["stages"], r["decode"], r["verdict"], r["calibration"]
    con.print(f"[bold]{r['model']}[/] recipe={','.join(r['recipe']) or 'none'} dtype={r['dtype']} "
              f"threads={r['threads']} | {r['prompt_tokens']} prompt + {r['new_tokens']} new tokens, "
              f"batch {r['batch']}, median of {r['repeats']}")
    t = Table(title="Request cycle T = t_pre + t_prefill + t_decode + t_post")
    for col in ("stage", "ms", "share"):
        t.add_column(col, justify="right")
    for k in ("t_pre", "t_prefill", "t_decode", "t_post"):
        t.add_row(k, f"{st[k] * 1e3:.1f}", f"{st['shares_pct'][k]:.1f}%")
    t.add_row("T", f"{st['total'] * 1e3:.1f}", f"wall {st['wall'] * 1e3:.1f} ms")
    con.print(t)
    con.print(f"decode: {dec['step_ms']:.2f} ms/step ({dec['tok_s']:.1f} tok/s), "
              f"{(dec['weight_bytes_per_step'] + dec['kv_bytes_per_step']) / 1e6:.1f} MB/step -> "
              f"{dec['achieved_gbs']:.2f} GB/s = {dec['pct_of_bandwidth']:.0f}% of {cal['bandwidth_gbs']:.1f} GB/s; "
              f"roofline {dec['roofline_ms']:.2f} ms; per-step overhead {dec['overhead_ms_per_step']:.2f} ms "
              f"({dec['overhead_pct']:.0f}%, profiler: step minus named compute kernels)")
    con.print(f"host overhead per step (no profiler): {dec['host_overhead_ms_per_step']:.2f} ms outside the model "
              f"graph ({dec['graph_ms_per_step']:.2f} ms inside it, step {dec['host_measured_step_ms']:.2f} ms)")
    sp = r.get("speculative")
    if sp:
        con.print(f"speculative ({sp['draft']}): acceptance {sp['acceptance_rate']:.0%} of {sp['draft_tokens']} "
                  f"proposed tokens, mean accepted length {sp['mean_accepted_len']:.2f} per verify pass")
    con.print(f"prefill: {r['prefill']['gflops']:.1f} GFLOP/s = {r['prefill']['pct_of_peak']:.0f}% of peak | "
              f"machine: fp32 {cal['fp32_gflops']:.0f} GFLOP/s, bf16 {cal['bf16_gflops']:.0f} GFLOP/s")
    ops = Table(title=f"Top ops by self time (decode, per step, {r['ops']['steps']} steps profiled)")
    for col in ("op", "group", "ms/step", "calls/step"):
        ops.add_column(col)
    for o in r["ops"]["top_ops"][:12]:
        ops.add_row(o["name"], o["group"], f"{o['self_ms_per_step']:.3f}", f"{o['calls_per_step']:.0f}")
    con.print(ops)
    groups = ", ".join(f"{g} {ms:.2f}" for g, ms in r["ops"]["groups_ms_per_step"].items())
    con.print(f"by module (ms/step, profiled): {groups}")
    con.print(f"[bold]verdict: {v['bound']}[/] (dominant phase: {v['phase']}; decode {v['decode_bound']}, "
              f"prefill {v['prefill_bound']})")
    for reason in v["reasons"]:
        con.print(f"  - {reason}")
    if v["recipes"]:
        con.print("  try: " + "; ".join(v["recipes"]))
    if r.get("trace"):
        con.print(f"chrome trace: {r['trace']}")
