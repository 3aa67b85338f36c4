"""PNG plots of a bench report (matplotlib, Agg backend): tok/s per scenario, speed vs ΔPPL, stage breakdown."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
STAGES = ("t_pre", "t_prefill", "t_decode", "t_post")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ok(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in report["rows"] if r.get("status") == "ok"]


def _throughput(sc: dict[str, Any], name: str) -> float:
    key = "prefill_tok_s" if name.startswith("prefill") else "tok_s"
    return (sc.get(key) or {}).get("median", 0.0)


def tok_s_bars(report: dict[str, Any], path: Path) -> bool:
    plt = _pyplot()
    rows, scen = _ok(report), report["scenarios"]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(scen) * max(1, len(rows)) / 2), 4))
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        vals = [_throughput(r["scenarios"].get(s) or {}, s) for s in scen]
        xs = [j + i * width for j in range(len(scen))]
        ax.bar(xs, vals, width, label=r["label"])
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(scen))], scen)
    ax.set_ylabel("tokens / s (median)")
    ax.set_xlabel("prefill: prompt tokens/s; decode: completion tokens/s (whole batch)", fontsize=8)
    ax.set_title("Throughput per scenario")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def pareto(report: dict[str, Any], path: Path) -> bool:
    """Decode b1 tok/s vs ΔPPL (%) for rows with quality figures."""
    plt = _pyplot()
    pts = []
    sc = next((s for s in report["scenarios"] if s.startswith("decode")), report["scenarios"][0])
    for r in _ok(report):
        q = r.get("quality") or {}
        tps = ((r["scenarios"].get(sc) or {}).get("tok_s") or {}).get("median")
        if isinstance(q.get("delta_ppl_pct"), (int, float)) and tps:
            pts.append((q["delta_ppl_pct"], tps, r["label"]))
    if not pts:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for x, y, label in pts:
        ax.scatter([x], [y])
        ax.annotate(label, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("ΔPPL vs first model (%)")
    ax.set_ylabel(f"{sc} tok/s")
    ax.set_title("Speed vs quality (up and left is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def stage_breakdown(report: dict[str, Any], path: Path) -> bool:
    """Stacked t_pre / t_prefill / t_decode / t_post of the first decode scenario (engine rows with stages)."""
    plt = _pyplot()
    sc = next((s for s in report["scenarios"] if s.startswith("decode")), report["scenarios"][0])
    rows = [r for r in _ok(report) if (r["scenarios"].get(sc) or {}).get("stages")]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(rows)), 4))
    bottoms = [0.0] * len(rows)
    for st in STAGES:
        vals = [1e3 * r["scenarios"][sc]["stages"].get(st, 0.0) for r in rows]
        ax.bar(range(len(rows)), vals, bottom=bottoms, label=st)
        bottoms = [b + v for b, v in zip(bottoms, vals, strict=True)]
    ax.set_xticks(range(len(rows)), [r["label"] for r in rows], fontsize=7)
    ax.set_ylabel("ms per request (median)")
    ax.set_title(f"T = t_pre + t_prefill + t_decode + t_post ({sc})", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def make_plots(report: dict[str, Any], out_dir: Path) -> list[str]:
    """Write the plots that have data; returns their file names."""
    made = []
    for name, fn in (("tok_s.png", tok_s_bars), ("pareto.png", pareto), ("stages.png", stage_breakdown)):
        try:
            if fn(report, out_dir / name):
                made.append(name)
        except Exception as e:  # a plot must never sink the report
            log.warning("plot %s failed: %s", name, e)
    return made
