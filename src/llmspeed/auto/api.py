"""`llmspeed.auto(llm, objective=..., max_ppl_increase=0.03, ...) -> AutoResult`: the search, its trial store and
its outputs. `out` becomes the chosen model (an ordinary llmspeed saved directory, written atomically) with
trials.db, trials.json, the fronts' PNGs and report.html beside its files; when nothing meets the budget, `out`
holds the trials and the report only — no model.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmspeed.auto.config import AutoConfig, Criteria, parse_fraction
from llmspeed.auto.report import write_report
from llmspeed.auto.result import AutoResult, Measurer, Progress
from llmspeed.auto.search import Search, _candidate
from llmspeed.auto.space import CANDIDATE_SOURCES, DRAFTS, CandidateSource, check_student, student_source
from llmspeed.auto.store import DB_NAME, TrialStore, open_study
from llmspeed.util.atomic import write_dir_atomically

log = logging.getLogger(__name__)


def check_out(out: Path, resume: bool) -> None:
    """Refuse to overwrite what is not ours; a previous auto run needs --resume (or another --out)."""
    from llmspeed.models.saved import is_saved_dir

    if not out.exists():
        if resume:
            raise ValueError(f"--resume: {out} does not exist (nothing to resume)")
        return
    if not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    has_db = (out / DB_NAME).is_file()
    if resume and not has_db:
        raise ValueError(f"--resume: {out} holds no {DB_NAME} of a previous llmspeed auto run")
    if has_db and not resume:
        raise ValueError(f"{out} holds a previous llmspeed auto run: pass --resume to continue it, or another --out")
    if not has_db and any(out.iterdir()) and not is_saved_dir(out):
        raise ValueError(f"--out {out} exists and is not an llmspeed directory: refusing to overwrite it")


def served_steps(model: str | Path) -> tuple[str, ...]:
    """What `llmspeed serve --model M` runs by default, as recipe steps on the model `llmspeed auto` starts from
    (`float_source(M)`): a GGUF taken as shipped keeps its blocks (its native recipe, e.g. int4-g32-asym and
    int8-head-g32 for the embedded model), and serve compiles the decode step (in the background, by default)."""
    from llmspeed.models.saved import is_saved_dir, read_saved_meta
    from llmspeed.models.spec import float_source, model_dir, parse_model_spec

    text = str(model)
    path = model_dir(parse_model_spec(text))
    recipe = read_saved_meta(path)[1] if is_saved_dir(path) else []
    if float_source(text) == text:  # auto starts from this model as it is: its recipe is applied already
        return () if any(t.startswith("compile") for t in recipe) else ("compile",)
    return (*recipe, "compile")  # the shipped blocks, made again from the float form (exact codes)


def _criteria(max_ppl_increase: Any, max_kl: Any, min_top1: Any, min_task_acc: Any, task: str | None) -> Criteria:
    def opt(v: Any, name: str) -> float | None:
        return None if v is None else parse_fraction(v, name)

    return Criteria(max_ppl_increase=opt(max_ppl_increase, "max_ppl_increase"), max_kl=opt(max_kl, "max_kl"),
                    min_top1=opt(min_top1, "min_top1"), min_task_acc=opt(min_task_acc, "min_task_acc"), task=task)


def _task(task: Any) -> tuple[Any, str | None]:
    """(the loaded multiple-choice task, how the criteria name it: the file's absolute path) or (None, None)."""
    if task is None:
        return None, None
    from llmspeed.evaluation.mctask import MCTask, load_mc_task

    if isinstance(task, MCTask):
        return task, task.name
    return load_mc_task(task), str(Path(task).resolve())


def _check_resume(store: TrialStore, cfg: AutoConfig) -> None:
    old = store.meta("config")
    if old is None:
        return
    for k in ("objective", "criteria"):
        if old[k] != cfg.to_dict()[k]:
            raise ValueError(f"--resume: the stored run used {k} {old[k]!r}, this one {cfg.to_dict()[k]!r}; "
                             "use the same settings or another --out")


def auto(llm: Any, objective: str = "decode", max_ppl_increase: Any = 0.03, *, max_kl: Any = None,
         min_top1: Any = None, min_task_acc: Any = None, task: Any = None, budget_minutes: float = 30.0,
         max_trials: int = 40, out: str | Path | None = None, prompts: Any = None, resume: bool = False,
         student: list[str | Path] | None = None,
         on_progress: Callable[[Progress], None] | None = None, sources: list[CandidateSource] | None = None,
         measurer: Measurer | None = None, clock: Callable[[], float] = time.monotonic,
         **settings: Any) -> AutoResult:
    """Search recipes (and serving settings for throughput/ttft) for the best `objective` inside the accuracy budget.

    `llm` is the original (float weights: `llmspeed.load("default:fp32")` for the embedded model); every candidate
    is built from it and judged against it. Criteria: `max_ppl_increase` relative (0.03 or "3%"), `max_kl`,
    `min_top1`, `min_task_acc` absolute; None switches one off. `task`: a multiple-choice JSONL file (or an
    `MCTask`) whose lm-eval `acc` `min_task_acc` bounds instead of the built-in last-word task. `prompts`: a JSONL
    path or a list of `WorkPrompt` for the speed runs. `student`: distilled student directories, candidates judged
    against `llm` (the teacher) like any other. `settings`: further `AutoConfig` fields (confirm_top,
    screen_eval_tokens, ...).
    """
    mc, task_ref = _task(task)
    cfg = AutoConfig(objective=objective, criteria=_criteria(max_ppl_increase, max_kl, min_top1, min_task_acc,
                                                             task_ref),
                     budget_minutes=budget_minutes, max_trials=max_trials, **settings)
    students = [check_student(p) for p in (student or [])]
    if students:
        sources = [*(CANDIDATE_SOURCES if sources is None else sources), student_source(students)]
    out_p = None if out is None else Path(out)
    if out_p is not None:
        check_out(out_p, resume)
    if isinstance(prompts, (str, Path)):
        from llmspeed.auto.workload import load_prompts

        prompts = load_prompts(prompts, cfg.new_tokens)
    if measurer is None:
        from llmspeed.auto.measure import LLMMeasurer

        measurer = LLMMeasurer(llm, cfg, prompts, mc)
    if out_p is not None:
        out_p.mkdir(parents=True, exist_ok=True)
    db = None if out_p is None else out_p / DB_NAME
    store = TrialStore(":memory:" if db is None else db)
    try:
        _check_resume(store, cfg)
        study = open_study(db, cfg.seed, resume)
        drafts = DRAFTS if cfg.objective == "decode" and prompts else ()  # draft gains depend on the workload
        res = Search(cfg, measurer, store, study, sources=sources, clock=clock, on_progress=on_progress,
                     drafts=drafts).run()
    finally:
        store.close()
    if out_p is None:
        return res
    res.out_dir = str(out_p)
    if res.accepted and res.chosen is not None:
        chosen = _candidate(res.chosen)

        def write(tmp: Path) -> None:
            measurer.save(chosen, tmp)
            shutil.copy2(out_p / DB_NAME, tmp / DB_NAME)
            write_report(res, tmp)

        write_dir_atomically(out_p, write)
        res.files = {p.name: str(p) for p in sorted(out_p.iterdir()) if p.suffix in (".json", ".png", ".html", ".db")}
    else:
        res.files = write_report(res, out_p) | {DB_NAME: str(out_p / DB_NAME)}
        log.warning("auto: %s", res.message)
    return res
