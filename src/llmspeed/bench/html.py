"""One self-contained report.html: tables plus the PNG plots embedded as base64 (no external resources)."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import Any

CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:4px 8px}
th{background:#f0f0f0}td.n{text-align:right}.bad{color:#b00}.note{color:#666;font-size:12px}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}"""


def status_text(row: dict[str, Any]) -> str:
    """'skipped: <why>' / 'error: <why>' without repeating the status when the note already starts with it."""
    note, status = row.get("note", ""), row.get("status", "")
    return note if note.startswith(status) else f"{status}: {note}"



def _med(s: dict[str, Any] | None, key: str) -> float | None:
    v = (s or {}).get(key)
    return v.get("median") if isinstance(v, dict) else v


def _n(v: float | None, spec: str = ".1f") -> str:
    return "–" if v is None else format(v, spec)


def _table(head: list[str], body: list[list[str]], cls: str) -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in row) + "</tr>"
                  for row in body)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>'


def _num(v: str) -> str:
    return f'<td class="n">{v}</td>'


def results_table(report: dict[str, Any]) -> str:
    body = []
    for r in report["rows"]:
        label = escape(r["label"])
        if r.get("status") != "ok":
            body.append([label, f'<td class="bad" colspan="9">{escape(status_text(r))}</td>'])
            continue
        for sc in report["scenarios"]:
            s = r["scenarios"].get(sc)
            if s:
                body.append([label, escape(sc), _num(_n(_med(s, "ttft_ms"))), _num(_n(_med(s, "tpot_ms"), ".2f")),
                             _num(_n(_med(s, "e2e_s"), ".3f")), _num(_n(_med(s, "tok_s"))),
                             _num(_n(_med(s, "decode_tok_s"))), _num(_n(s.get("achieved_gbs"), ".2f")),
                             _num(_n(s.get("pct_of_bandwidth"), ".0f")), "yes" if s["tokens_ok"] else "NO"])
    return _table(["row", "scenario", "TTFT ms", "TPOT ms", "E2E s", "tok/s", "decode tok/s", "GB/s", "% BW",
                   "tokens ok"], body, "results")


def resources_table(report: dict[str, Any]) -> str:
    body = []
    for r in report["rows"]:
        if r.get("status") == "ok":
            q = r.get("quality") or {}
            qs = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in q.items()) or "–"
            body.append([escape(r["label"]), _num(f"{r['size_bytes'] / 1e6:.1f}"), _num(f"{r['peak_rss_mb']:.0f}"),
                         _num(f"{r['load_s']:.1f}"), escape(qs)])
    return _table(["row", "size on disk MB", "peak RSS MB", "load s", "quality"], body, "resources")


def strategy_html(report: dict[str, Any]) -> str:
    body = [[escape(t["strategy"]), escape(t["label"]), escape(t["scenario"]), _num(f"{t['cycle_s']:.3f}"),
             _num(f"{t['baseline_cycle_s']:.3f}"), _num(f"{t['reduction_pct']:.1f}%"),
             _num(_n(t["speedup"], ".2f") + "×")] for t in report["strategy_table"]]
    base = report["strategy_table"][0]["baseline"] if report["strategy_table"] else "–"
    return (f"<p class='note'>Baseline: {escape(base)}. T = end-to-end request time (t_pre + t_prefill + "
            f"t_decode + t_post), median over repeats.</p>"
            + _table(["strategy", "row", "scenario", "T s", "baseline T s", "% cycle time reduction", "speed-up"],
                     body, "strategy"))


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def render_html(report: dict[str, Any], out_dir: Path) -> str:
    env, cal = report["environment"], report.get("calibration")
    env_items = "".join(f"<li>{escape(str(k))}: {escape(str(v))}</li>" for k, v in env.items())
    cal_line = ""
    if cal:
        cal_line = (f"<p>Measured on this machine: memory bandwidth <b>{cal['bandwidth_gbs']:.1f} GB/s</b>, fp32 GEMM "
                    f"<b>{cal['fp32_gflops']:.0f} GFLOP/s</b>, bf16 GEMM <b>{cal['bf16_gflops']:.0f} GFLOP/s</b>.</p>")
    imgs = "".join(_img(out_dir / name, name) for name in report["files"].get("plots", []))
    cfg = report["config"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>llmspeed bench report</title><style>{CSS}</style></head>
<body>
<h1>llmspeed bench report</h1>
<p class="note">{escape(report['created'])} · schema {escape(report['schema'])} · {cfg['repeats']} repeats after
{cfg['warmup']} warm-up · prompt {cfg['prompt_len']} tokens, {cfg['new_tokens']} new tokens (greedy, EOS ignored)</p>
{cal_line}
<h2>Results (medians)</h2>
{results_table(report)}
<h2>Strategy → % cycle time reduction vs baseline</h2>
{strategy_html(report)}
<h2>Size, memory, quality</h2>
{resources_table(report)}
<h2>Plots</h2>
{imgs or '<p class="note">no plots</p>'}
<h2>Environment</h2>
<ul>{env_items}</ul>
</body></html>
"""
