"""`llmspeed auto --objective decode --max-ppl-increase 3% --out DIR`: search recipes (and serving settings) for
the fastest model inside an accuracy budget; DIR becomes the chosen model, with the trials and report beside it."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import typer

from llmspeed.cli.common import ModelOpt, ThreadsOpt


def register(app: typer.Typer) -> None:
    app.command("auto")(auto)


def _opt_fraction(v: str | None, name: str) -> float | None:
    from llmspeed.auto.config import parse_fraction

    return None if v is None or v.strip().lower() in ("", "none", "off") else parse_fraction(v, name)


def auto(
    out: Path = typer.Option(..., "--out", "-o", help="directory: the chosen model, trials.json, fronts, report"),
    model: str = ModelOpt,
    objective: str = typer.Option("decode", "--objective", help="decode | prefill | ttft | throughput | size"),
    max_ppl_increase: str = typer.Option("3%", "--max-ppl-increase", help="relative, held-out plays (3% or 0.03); "
                                         "'off' to drop it"),
    max_kl: str = typer.Option(None, "--max-kl", help="mean KL(original || candidate) per token, absolute"),
    min_top1: str = typer.Option(None, "--min-top1", help="top-1 agreement with the original, absolute (0.95)"),
    min_task_acc: str = typer.Option(None, "--min-task-acc", help="task accuracy, absolute (0.3): last-word, "
                                     "or --task's"),
    task: Path = typer.Option(None, "--task", help="multiple-choice JSONL for --min-task-acc: {\"context\": ..., "
                              "\"choices\": [...], \"gold\": i} per line (lm-eval's acc)"),
    budget_minutes: float = typer.Option(30.0, "--budget-minutes", help="wall-clock budget of the whole search"),
    max_trials: int = typer.Option(40, "--max-trials", help="candidates screened, across resumed runs"),
    prompts: Path = typer.Option(None, "--prompts", help="JSONL workload for the speed runs: "
                                 "{\"prompt\": ..., \"max_tokens\": N} per line"),
    student: list[Path] = typer.Option(None, "--student", help="a distilled student directory, judged against "
                                       "--model (the teacher) as a candidate; repeat for more"),
    resume: bool = typer.Option(False, "--resume", help="continue the run stored in --out (no finished trial repeats)"),
    eval_tokens: int = typer.Option(8192, "--eval-tokens", help="held-out tokens of the full (accepting) eval"),
    screen_tokens: int = typer.Option(1024, "--screen-tokens", help="held-out tokens of the screening slice"),
    threads: int = ThreadsOpt,
    seed: int = typer.Option(0, "--seed", help="TPE sampler seed"),
) -> None:
    """Find the fastest recipe (and serving settings) that stays inside an accuracy budget."""
    import llmspeed
    from llmspeed.auto.api import check_out, served_steps
    from llmspeed.auto.config import AutoConfig, Criteria
    from llmspeed.auto.space import check_student
    from llmspeed.auto.workload import load_prompts
    from llmspeed.models.spec import float_source

    crit = Criteria(max_ppl_increase=_opt_fraction(max_ppl_increase, "--max-ppl-increase"),
                    max_kl=_opt_fraction(max_kl, "--max-kl"), min_top1=_opt_fraction(min_top1, "--min-top1"),
                    min_task_acc=_opt_fraction(min_task_acc, "--min-task-acc"),
                    task=None if task is None else str(task))
    sizes: dict[str, Any] = {"full_eval_tokens": eval_tokens, "screen_eval_tokens": screen_tokens}
    cfg = AutoConfig(objective=objective, criteria=crit, budget_minutes=budget_minutes, max_trials=max_trials,
                     seed=seed, **sizes)  # bad input fails here: one line, exit 2, nothing loaded
    work = load_prompts(prompts, cfg.new_tokens) if prompts is not None else None
    students = [check_student(p) for p in student or []]
    if task is not None:
        from llmspeed.evaluation.mctask import load_mc_task

        load_mc_task(task)  # a malformed file fails here, before the model loads
    check_out(out, resume)
    if objective in ("throughput", "ttft"):  # the baseline: the model as `llmspeed serve --model M` runs it
        sizes["served_steps"] = served_steps(model)
    llm = llmspeed.load(float_source(model), threads=threads)
    with _progress_bar(cfg.max_trials) as on_progress:
        res = llmspeed.auto(llm, objective, crit.max_ppl_increase, max_kl=crit.max_kl, min_top1=crit.min_top1,
                            min_task_acc=crit.min_task_acc, task=task, budget_minutes=budget_minutes, max_trials=max_trials,
                            out=out, prompts=work, resume=resume, student=students, on_progress=on_progress, seed=seed,
                            **sizes)
    render(res)
    if not res.accepted:
        raise typer.Exit(1)


AUTO_LOG = logging.getLogger("llmspeed.auto")


class _progress_bar:
    """A live line (trial n/N, best so far, time left) on a terminal; log heartbeats do it otherwise."""

    def __init__(self, total: int) -> None:
        self.total, self.bar, self.task = total, None, None
        self.level: int | None = None

    def __enter__(self) -> Any:
        if not sys.stderr.isatty():  # log lines instead: each trial, its heartbeats, the phases
            self.level = AUTO_LOG.level
            AUTO_LOG.setLevel(logging.INFO)
            return None
        from rich.progress import Progress

        self.bar = Progress(transient=True)
        self.bar.__enter__()
        self.task = self.bar.add_task("auto", total=self.total)

        def update(p: Any) -> None:
            self.bar.update(self.task, completed=min(p.n, p.total),
                            description=f"{p.phase} {p.n}/{p.total} | best {p.best} | {p.left_s / 60:.1f} min left")

        return update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
        if self.level is not None:
            AUTO_LOG.setLevel(self.level)


def render(res: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    from llmspeed.auto.config import OBJECTIVE_METRIC
    from llmspeed.auto.report import ablation_rows, front_points, fronts

    con = Console()
    key, unit, higher = OBJECTIVE_METRIC[res.objective]
    con.print(f"[bold]llmspeed auto[/] objective {res.objective} ({key}, {unit}); budget {res.criteria}; "
              f"verdict {res.verdict}; {len(res.trials)} trials in {res.seconds / 60:.1f} min")
    fr = fronts(res)
    measured = {n: len(front_points(res.trials, k, h)[0]) for n, k, h in (("speed", key, higher),
                                                                           ("size", "size_mb", False))}
    con.print(f"Pareto fronts: {len(fr['speed'])} non-dominated of {measured['speed']} measured points ({key} vs "
              f"ΔPPL), {len(fr['size'])} of {measured['size']} (size vs ΔPPL)")
    if res.ablation:
        rows = ablation_rows(res)
        t = Table(title="Strategy -> % cycle-time cut (measured, one request; ms; T = pre + prefill + decode + "
                  "post)")
        for c in ("+ step", "pre", "prefill", "decode", "post", "T", "cut %", "vs orig"):
            if c == "+ step":  # recipe tokens stay whole (a folded "int4-g32-asym" reads as two steps); a long
                # serving row folds within 15 columns rather than squeezing the figures
                t.add_column(c, overflow="fold", min_width=min(15, max(len(r[0]) for r in rows)))
            else:
                t.add_column(c, justify="right", overflow="fold")
        for row in rows:  # the cumulative recipe column is in report.html
            t.add_row(row[0], *row[2:])
        con.print(t)
    con.print(("[green]" if res.accepted else "[red]") + res.message + "[/]")
    for name, path in sorted(res.files.items()):
        con.print(f"  {name}: {path}")
