"""The bench report: one JSON document (keys documented in docs/report-schema.md), a Markdown table, PNG
plots and a self-contained report.html."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from llmspeed.bench.html import render_html, status_text

SCHEMA = "llmspeed.bench/1"


def _med(row: dict[str, Any], scenario: str, metric: str) -> float | None:
    sc = (row.get("scenarios") or {}).get(scenario) or {}
    v = sc.get(metric)
    if isinstance(v, dict):
        return v.get("median")
    return v


def baseline_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The row others are compared to: HF eager if measured, else the first measured model."""
    ok = [r for r in rows if r.get("status") == "ok"]
    for r in ok:
        if r["engine"] == "hf":
            return r
    return ok[0] if ok else None


def strategy_table(rows: list[dict[str, Any]], scenarios: list[str]) -> list[dict[str, Any]]:
    """The seeds' table: strategy -> % reduction of the request cycle time T (end-to-end) vs the baseline."""
    base = baseline_row(rows)
    if base is None:
        return []
    table = []
    for r in rows:
        if r.get("status") != "ok" or r is base:
            continue
        for sc in scenarios:
            t, tb = _med(r, sc, "e2e_s"), _med(base, sc, "e2e_s")
            if t is None or not tb:
                continue
            table.append({"strategy": strategy_name(r), "label": r["label"], "scenario": sc, "cycle_s": t,
                          "baseline": base["label"], "baseline_cycle_s": tb, "reduction_pct": 100 * (tb - t) / tb,
                          "speedup": tb / t if t > 0 else None})
    return table


def strategy_name(row: dict[str, Any]) -> str:
    if row["engine"] == "llamacpp":
        return "llama.cpp (GGUF quantized kernels)"
    if row["engine"] == "hf":
        return "transformers eager"
    recipe = ",".join(row.get("recipe") or [])
    return "llmspeed engine (paged KV, continuous batching)" + (f" + {recipe}" if recipe else "")


def quality_deltas(rows: list[dict[str, Any]]) -> None:
    """Add `delta_ppl_pct` to each row's quality, relative to the first model with a perplexity."""
    ref = next((r["quality"]["ppl"] for r in rows if isinstance((r.get("quality") or {}).get("ppl"), (int, float))),
               None)
    for r in rows:
        q = r.get("quality") or {}
        if ref and isinstance(q.get("ppl"), (int, float)):
            q["delta_ppl_pct"] = 100 * (q["ppl"] - ref) / ref


def build_report(cfg: Any, rows: list[dict[str, Any]], env: dict[str, Any],
                 cal: dict[str, Any] | None) -> dict[str, Any]:
    quality_deltas(rows)
    return {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "environment": env, "calibration": cal, "config": cfg.to_dict(), "scenarios": list(cfg.scenarios),
            "rows": rows, "strategy_table": strategy_table(rows, list(cfg.scenarios)),
            "files": {"json": "report.json", "markdown": "report.md", "html": "report.html", "plots": []}}


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "–" if v is None else format(v, spec)


def markdown(report: dict[str, Any]) -> str:
    env, cal = report["environment"], report.get("calibration")
    lines = [f"# llmspeed bench — {report['created']}", "",
             f"CPU {env['cpu_model']} ({env['physical_cores']} cores; {env.get('cpu_flags', '?')}), "
             f"{env['threads']} threads, torch "
             f"{env['torch_version']}, llmspeed {env['llmspeed_version']}, commit {(env['git_commit'] or '?')[:10]}"]
    if cal:
        lines.append(f"Measured here: memory bandwidth {cal['bandwidth_gbs']:.1f} GB/s, fp32 GEMM "
                     f"{cal['fp32_gflops']:.0f} GFLOP/s, bf16 GEMM {cal['bf16_gflops']:.0f} GFLOP/s")
    lines += ["", "| row | scenario | TTFT ms | TPOT ms | E2E s | tok/s | decode tok/s | GB/s | % BW | tokens ok |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in report["rows"]:
        if r.get("status") != "ok":
            lines.append(f"| {r['label']} | {status_text(r)} | | | | | | | | |")
            continue
        for sc in report["scenarios"]:
            s = r["scenarios"].get(sc)
            if not s:
                continue
            lines.append(
                f"| {r['label']} | {sc} | {_fmt(_med(r, sc, 'ttft_ms'))} | {_fmt(_med(r, sc, 'tpot_ms'), '.2f')} | "
                f"{_fmt(_med(r, sc, 'e2e_s'), '.3f')} | {_fmt(_med(r, sc, 'tok_s'))} | "
                f"{_fmt(_med(r, sc, 'decode_tok_s'))} | {_fmt(s.get('achieved_gbs'), '.2f')} | "
                f"{_fmt(s.get('pct_of_bandwidth'), '.0f')} | {'yes' if s['tokens_ok'] else 'NO'} |")
    spec_lines = [f"| {r['label']} | {sc} | {s['acceptance_rate']:.0%} | {s['mean_accepted_len']:.2f} | "
                  f"{s['draft_tokens']:.0f} |"
                  for r in report["rows"] if r.get("status") == "ok" for sc in report["scenarios"]
                  if (s := ((r["scenarios"].get(sc) or {}).get("speculative")))]
    if spec_lines:
        lines += ["", "Speculative decoding (timed runs):", "",
                  "| row | scenario | acceptance | mean accepted length | proposed tokens |", "|---|---|---:|---:|---:|",
                  *spec_lines]
    lines += ["", "| row | size MB | peak RSS MB | load s | quality |", "|---|---:|---:|---:|---|"]
    for r in report["rows"]:
        if r.get("status") == "ok":
            q = r.get("quality") or {}
            qs = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in q.items()) or "–"
            lines.append(f"| {r['label']} | {r['size_bytes'] / 1e6:.1f} | {r['peak_rss_mb']:.0f} | "
                         f"{r['load_s']:.1f} | {qs} |")
    lines += ["", "## Strategy → % cycle time reduction vs baseline", "",
              "| strategy | row | scenario | T s | baseline T s | reduction | speed-up |",
              "|---|---|---|---:|---:|---:|---:|"]
    for t in report["strategy_table"]:
        lines.append(f"| {t['strategy']} | {t['label']} | {t['scenario']} | {t['cycle_s']:.3f} | "
                     f"{t['baseline_cycle_s']:.3f} | {t['reduction_pct']:.1f}% | {_fmt(t['speedup'], '.2f')}x |")
    return "\n".join(lines) + "\n"


def write_report(out_dir: Path, report: dict[str, Any], plots: bool = True) -> None:

    if plots:
        from llmspeed.bench.plots import make_plots

        report["files"]["plots"] = make_plots(report, out_dir)
    (out_dir / "report.md").write_text(markdown(report), encoding="utf-8")
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(report, out_dir), encoding="utf-8")
