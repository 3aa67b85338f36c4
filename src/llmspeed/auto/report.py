"""What `llmspeed auto` leaves beside the chosen model: trials.json, the Pareto fronts as PNG (speed vs ΔPPL,
size vs ΔPPL) and report.html (fronts embedded, the trials table, the seeds' ablation table)."""

from __future__ import annotations

import base64
import json
import logging
import math
from html import escape
from pathlib import Path
from typing import Any

from llmspeed.auto.config import OBJECTIVE_METRIC
from llmspeed.auto.pareto import pareto_front
from llmspeed.auto.result import AutoResult
from llmspeed.util.atomic import write_text_atomically

log = logging.getLogger(__name__)
CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:4px 8px}
th{background:#f0f0f0}td.n{text-align:right}.bad{color:#b00}.ok{color:#070}img{max-width:100%}"""


def _figures(rec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(quality, speed) of a trial: the full eval / benchmark where measured, else the screening ones."""
    q = ((rec.get("full") or {}).get("quality")) or ((rec.get("screen") or {}).get("quality")) or {}
    s = ((rec.get("bench") or {}).get("speed")) or ((rec.get("screen") or {}).get("speed")) or {}
    return q, s


def name_of(rec: dict[str, Any]) -> str:
    """A trial's model in a few words: [student:]recipe [+draft spec]."""
    c = rec["candidate"]
    s = c["recipe"] or "original"
    if c.get("model"):
        s = f"{Path(c['model']).name}:{s}"
    return s + (f" +draft {c['draft']}" if c.get("draft") else "")


def front_points(trials: list[dict[str, Any]], key: str, higher: bool) -> tuple[list[tuple[float, float]],
                                                                               list[dict[str, Any]]]:
    """(gain, ΔPPL %) of every screened trial; gain = the figure, negated when lower is better. Every point is the
    screening run and eval slice, measured alike for all trials: the full eval and benchmark exist for a few
    trials only and run longer (other figures), so mixing them would rank unlike measurements (a benchmarked
    `speed` preset looked dominated by screened twins)."""
    pts, recs = [], []
    for r in trials:
        scr = r.get("screen") or {}
        q, s = scr.get("quality") or {}, scr.get("speed") or {}
        if s.get(key) is None or q.get("delta_ppl_pct") is None:
            continue
        v = float(s[key])
        pts.append((v if higher else -v, float(q["delta_ppl_pct"])))
        recs.append(r)
    return pts, recs


def fronts(res: AutoResult) -> dict[str, list[dict[str, Any]]]:
    """'speed' (the objective's figure vs ΔPPL) and 'size' (MB vs ΔPPL): the non-dominated trials of each."""
    out = {}
    key, _, higher = OBJECTIVE_METRIC[res.objective]
    for name, (k, h) in (("speed", (key, higher)), ("size", ("size_mb", False))):
        pts, recs = front_points(res.trials, k, h)
        out[name] = [{"recipe": name_of(recs[i]), "key": recs[i]["key"],
                      "value": abs(pts[i][0]), "delta_ppl_pct": pts[i][1], "status": recs[i]["status"]}
                     for i in pareto_front(pts)]
    return out


def _plot(res: AutoResult, key: str, higher: bool, unit: str, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts, recs = front_points(res.trials, key, higher)
    if not pts:
        return False
    front = pareto_front(pts)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs, ys = [p[1] for p in pts], [abs(p[0]) for p in pts]
    ax.scatter(xs, ys, c="#bbb", s=18, label="trials (screening run and eval slice)")
    fx, fy = [pts[i][1] for i in front], [abs(pts[i][0]) for i in front]
    ax.plot(fx, fy, "o-", color="#c33", label="Pareto front")
    for i in front:
        ax.annotate(name_of(recs[i]), (pts[i][1], abs(pts[i][0])), fontsize=6,
                    xytext=(3, 3), textcoords="offset points")
    if res.chosen is not None:
        q, s = _figures(res.chosen)
        if s.get(key) is not None:
            ax.scatter([q["delta_ppl_pct"]], [s[key]], marker="*", s=160, color="#070",
                       label="chosen (full eval and benchmark)", zorder=5)
    if res.baseline.get(key) is not None:
        ax.scatter([0.0], [res.baseline[key]], marker="x", s=60, color="#000",
                   label=f"{res.baseline_name} (benchmark, same run)", zorder=5)
    lim = res.ppl_budget_pct
    if lim is not None and math.isfinite(lim):
        ax.axvline(lim, ls="--", color="#888", lw=1, label=f"ΔPPL budget {lim:g}%")
    if max(xs) > 100.0:  # a ruined candidate (ΔPPL 1e7 %) would squeeze every useful point into one column
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlim(left=min(-1.0, min(xs)), right=10 ** math.ceil(math.log10(max(xs))))
    ax.set_xlabel("ΔPPL vs the original (%, held-out plays" + (", symlog" if max(xs) > 100.0 else "") + ")")
    ax.set_ylabel(f"{key} ({unit}, {'higher' if higher else 'lower'} is better)")
    ax.set_title(f"llmspeed auto: {key} vs ΔPPL")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "–" if not isinstance(v, (int, float)) or not math.isfinite(v) else format(v, spec)


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def ablation_rows(res: AutoResult) -> list[list[str]]:
    return [[r["added"], r["recipe"], *(_fmt(1e3 * r[k], ".1f") for k in ("t_pre", "t_prefill", "t_decode",
                                                                          "t_post", "T")),
             _fmt(r["step_cut_pct"], "+.1f"), _fmt(r["cut_pct"], "+.1f")] for r in res.ablation]


ABLATION_HEAD = ["step added", "recipe", "t_pre ms", "t_prefill ms", "t_decode ms", "t_post ms", "T ms",
                 "cut vs previous %", "cycle-time cut vs original %"]


def html(res: AutoResult, images: dict[str, str]) -> str:
    key, unit, _ = OBJECTIVE_METRIC[res.objective]
    verdict = "accepted" if res.accepted else "NO RESULT (over budget)"
    parts = [f"<h1>llmspeed auto: {escape(res.objective)}</h1>",
             f"<p class=\"{'ok' if res.accepted else 'bad'}\"><b>{escape(verdict)}</b>: {escape(res.message)}</p>",
             f"<p>accuracy budget: {escape(res.criteria)}; profile verdict: {escape(str(res.verdict))}; "
             f"{len(res.trials)} trials in {res.seconds / 60:.1f} min</p>"]
    if res.baseline:
        ratio = "" if res.ratio is None else f"; chosen vs {res.baseline_name}: <b>{res.ratio:.2f}x</b>"
        parts.append(f"<p>{escape(res.baseline_name)} (same run): {key} {_fmt(res.baseline.get(key))} {unit}, "
                     f"size {_fmt(res.baseline.get('size_mb'), '.1f')} MB{ratio}</p>")
    for name, b64 in images.items():
        parts.append(f"<h2>{escape(name)}</h2><img alt=\"{escape(name)}\" src=\"data:image/png;base64,{b64}\">")
    if res.ablation:
        parts.append("<h2>Strategy → % cycle-time cut (measured ablation, T = t_pre + t_prefill + t_decode + "
                     "t_post, one request)</h2>" + _table(ABLATION_HEAD, ablation_rows(res)))
    rows = []
    for r in res.trials:
        q, s = _figures(r)
        rows.append([str(r["number"]), name_of(r),
                     json.dumps(r["candidate"]["serving"]) if r["candidate"]["serving"] else "", r["source"],
                     r["status"], _fmt(s.get(key)), _fmt(s.get("size_mb"), ".1f"), _fmt(q.get("delta_ppl_pct")),
                     _fmt(q.get("kl"), ".4f"), _fmt(q.get("top1"), ".3f"),
                     "full" if r.get("full") else ("slice" if r.get("screen") else "–")])
    parts.append("<h2>Trials</h2>" + _table(["#", "recipe", "serving", "source", "status", f"{key} {unit}",
                                             "size MB", "ΔPPL %", "KL", "top-1", "eval"], rows))
    machine = res.trials[0]["machine"] if res.trials else {}
    parts.append(f"<p>machine: {escape(json.dumps(machine))}</p>")
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>llmspeed auto</title><style>{CSS}</style>"
            f"</head><body>{''.join(parts)}</body></html>")


def write_report(res: AutoResult, out: Path) -> dict[str, str]:
    """trials.json, front_speed.png, front_size.png, report.html into `out`; returns name -> path."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    key, unit, higher = OBJECTIVE_METRIC[res.objective]
    images: dict[str, str] = {}
    for name, (k, h, u, title) in {"front_speed.png": (key, higher, unit, f"{key} vs ΔPPL"),
                                   "front_size.png": ("size_mb", False, "MB", "size vs ΔPPL")}.items():
        try:
            if _plot(res, k, h, u, out / name):
                files[name] = str(out / name)
                images[title] = base64.b64encode((out / name).read_bytes()).decode()
        except Exception as e:  # a plot must never sink the result
            log.warning("auto: plot %s failed: %s", name, e)
    doc = res.to_dict() | {"fronts": fronts(res)}
    write_text_atomically(out / "trials.json", json.dumps(doc, indent=2, default=str))
    files["trials.json"] = str(out / "trials.json")
    write_text_atomically(out / "report.html", html(res, images))
    files["report.html"] = str(out / "report.html")
    return files
