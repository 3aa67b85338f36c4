"""The real `Measurer`: builds each candidate from the original model, evaluates it against the original on the
held-out plays (a slice for screening, the full eval for confirmation) and times it (workload.py).

A candidate is built from a deep copy of the original's float modules (never reloaded from disk) and compressed
with `LLM.compress_`, so every candidate starts from the same weights. The last build is kept, so a survivor's
confirmation does not rebuild (nor recompile) it.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import logging
import platform
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmspeed.auto.config import AutoConfig
from llmspeed.auto.space import Candidate, ModelFacts
from llmspeed.auto.workload import WorkPrompt, cycle_time, fit_new_tokens, speed_of, threads_set
from llmspeed.llm import LLM

if TYPE_CHECKING:
    from llmspeed.evaluation.mctask import MCTask

log = logging.getLogger(__name__)


def quality_of(llm: Any, base: Any, max_tokens: int, task_n: int, task: MCTask | None = None,
               baseline_task_acc: float | None = None) -> dict[str, Any]:
    """ΔPPL (fraction), KL, top-1 agreement against `base`; with task_n > 0 the task accuracy too: lm-eval's `acc`
    on `task` (the multiple-choice file, already cut to the slice) when given, else last-word accuracy."""
    from llmspeed.evaluation.api import evaluate

    lastword_n = task_n if task is None else 0
    r = evaluate(llm, baseline=base, max_tokens=max_tokens, ood_max_tokens=0, lastword_n=lastword_n)
    q = {"delta_ppl": r["delta_ppl_pct"] / 100.0, "delta_ppl_pct": r["delta_ppl_pct"], "ppl": r["ppl"],
         "baseline_ppl": r["baseline_ppl"], "kl": r["kl_mean"], "top1": r["top1_agreement"],
         "n_tokens": r["n_tokens"], "plays": sorted(r.get("parts", {}))}
    if task_n and task is None:
        q |= {"task_acc": r["lastword_accuracy"], "baseline_task_acc": r["baseline_lastword_accuracy"],
              "task_n": task_n, "task": "last-word"}
    elif task_n and task is not None:
        from llmspeed.evaluation.mctask import mc_accuracy

        if baseline_task_acc is None:
            baseline_task_acc = mc_accuracy(base, task)["task_acc"]
        q |= {"task_acc": mc_accuracy(llm, task)["task_acc"], "baseline_task_acc": baseline_task_acc,
              "task_n": len(task.items), "task": task.name}
    return q


def _median_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-key median of numeric figures over rounds (other values from the first round), plus the rounds."""
    out = dict(runs[0])
    for k, v in runs[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = statistics.median(float(r[k]) for r in runs)
    out["rounds"] = [{k: v for k, v in r.items() if isinstance(v, float)} for r in runs]
    return out


class LLMMeasurer:
    def __init__(self, base: LLM, cfg: AutoConfig, prompts: list[WorkPrompt] | None = None,
                 task: MCTask | None = None) -> None:
        self.base, self.cfg, self.prompts = base, cfg, prompts
        self.task = task  # the multiple-choice task of min_task_acc (None: last-word)
        self._task_slices: dict[bool, tuple[MCTask, float]] = {}  # full? -> (items, the original's accuracy)
        self._built: tuple[str, LLM] | None = None
        self.profile: dict[str, Any] | None = None

    # -- facts ----------------------------------------------------------------------------------------------
    def machine(self) -> dict[str, Any]:
        import torch

        from llmspeed.util.cpu import cpu_info

        ci = cpu_info()
        return {"cpu": ci.model, "isa": ci.isa_summary(), "physical_cores": ci.physical_cores,
                "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()}

    def max_threads(self) -> int:
        from llmspeed.util.cpu import cpu_info

        return cpu_info().physical_cores

    def model_facts(self) -> ModelFacts:
        from llmspeed.compress.quant.int4 import fitting_groups

        return ModelFacts(fitting_groups(self.base.model), getattr(self.base.config, "intermediate_size", None))

    def verdict(self) -> str | None:
        """`llmspeed profile`'s bound for the original (short run); None when it cannot be measured."""
        from llmspeed.profiling.runner import ProfileConfig, run_profile

        try:
            n = min(32, max(4, self.base.config.max_position // 4))
            cfg = ProfileConfig(prompt_len=min(128, self.base.config.max_position // 2), new_tokens=n, repeats=1,
                                profile_steps=8)
            self.profile = run_profile(self.base, cfg)
            v = self.profile["verdict"]
            log.info("auto: profile verdict %s (%s)", v["bound"], "; ".join(v["reasons"]))
            return str(v["bound"])
        except Exception as e:  # the verdict only orders the seeds
            log.warning("auto: profile verdict unavailable (%s); presets in their default order", e)
            return None

    # -- building -------------------------------------------------------------------------------------------
    def build(self, cand: Candidate) -> LLM:
        if self._built is not None and self._built[0] == cand.key:
            return self._built[1]
        self._drop_built()
        llm = self._make(cand)
        if llm is not self.base:
            self._built = (cand.key, llm)
        return llm

    def _drop_built(self) -> None:
        """Forget the last built candidate and free its memory before building another."""
        self._built = None
        gc.collect()

    def _make(self, cand: Candidate, made: dict[str, LLM] | None = None) -> LLM:
        if self._built is not None and self._built[0] == cand.key:
            return self._built[1]
        if made is not None and cand.key in made:
            return made[cand.key]
        if cand.draft is not None:  # the same model (weights and compiled decode shared), drafting
            llm = copy.copy(self._make(dataclasses.replace(cand, draft=None), made))
            llm.set_draft(cand.draft)
            return llm
        if cand.model is not None:
            import llmspeed

            llm = llmspeed.load(cand.model)
        elif not cand.steps and not cand.serving:
            llm = self.base
        else:
            llm = LLM(copy.deepcopy(self.base.model), self.base.tokenizer, list(self.base.recipe), self.base.source)
        if cand.steps:
            llm.compress_(cand.recipe, progress=False)
        return llm

    def _speed(self, llm: LLM, cand: Candidate, full: bool) -> dict[str, Any]:
        c = self.cfg
        return speed_of(llm, c.objective, self.prompts, new_tokens=c.new_tokens,
                        repeats=c.repeats if full else c.screen_repeats, concurrency=c.concurrency,
                        serving=cand.serving_dict, prefill_len=512 if full else 256)

    def _quality(self, llm: LLM, full: bool) -> dict[str, Any]:
        c = self.cfg
        tokens = c.full_eval_tokens if full else c.screen_eval_tokens
        if not c.criteria.needs_task:
            return quality_of(llm, self.base, tokens, 0)
        if self.task is None:
            return quality_of(llm, self.base, tokens, c.full_task_n if full else c.screen_task_n)
        if full not in self._task_slices:  # the file in full, or evenly spaced items for the slice
            from llmspeed.evaluation.mctask import mc_accuracy

            t = self.task if full else self.task.subset(c.screen_task_n)
            self._task_slices[full] = (t, mc_accuracy(self.base, t)["task_acc"])
        t, base_acc = self._task_slices[full]
        return quality_of(llm, self.base, tokens, len(t.items), t, base_acc)

    # -- the Measurer protocol ------------------------------------------------------------------------------
    def screen(self, cand: Candidate) -> dict[str, Any]:
        llm = self.build(cand)
        return {"quality": self._quality(llm, full=False), "speed": self._speed(llm, cand, full=False)}

    def speed(self, cand: Candidate) -> dict[str, Any]:
        return self._speed(self.build(cand), cand, full=False)

    def confirm(self, cand: Candidate) -> dict[str, Any]:
        return self._quality(self.build(cand), full=True)

    def benchmark(self, cands: list[Candidate]) -> list[dict[str, Any]]:
        """All models built first, then `repeats` rounds, each model once per round in turn (load that comes and
        goes hits them all alike); per model the median of its rounds."""
        self._drop_built()
        made: dict[str, LLM] = {}
        for c in cands:  # a draft candidate shares its twin's weights when both are benchmarked
            made[c.key] = self._make(c, made)
        llms = [made[c.key] for c in cands]
        runs: list[list[dict[str, Any]]] = [[] for _ in cands]
        for _ in range(self.cfg.repeats):
            for i, (c, llm) in enumerate(zip(cands, llms, strict=True)):
                runs[i].append(speed_of(llm, self.cfg.objective, self.prompts, new_tokens=self.cfg.new_tokens,
                                        repeats=1, concurrency=self.cfg.concurrency, serving=c.serving_dict))
        return [_median_runs(r) for r in runs]

    def _ablation_work(self) -> list[tuple[str, int]]:
        """(prompt, new tokens) of the ablation: up to 8 of the user's prompts (a draft's gain depends on them),
        else one filler prompt."""
        if self.prompts:
            return [(wp.prompt, fit_new_tokens(self.base, wp.prompt, min(wp.max_tokens, self.cfg.new_tokens)))
                    for wp in self.prompts[:8]]
        from llmspeed.bench.quick import prompt_of

        return [(prompt_of(self.base, min(128, self.base.config.max_position // 2)),
                 min(self.cfg.new_tokens, self.base.config.max_position // 4))]

    def ablation(self, cand: Candidate) -> list[dict[str, Any]]:
        """The seeds' table: each step added in turn (a student first, a draft last), its measured T and % cycle-time
        cut vs the original. T is one request's, averaged over the ablation prompts."""
        work = self._ablation_work()
        stages: list[tuple[str, str, Candidate]] = [("original", "original", Candidate())]
        if cand.model is not None:
            stages.append(("student", f"student {Path(cand.model).name}", Candidate(model=cand.model)))
        stages += [("step", tok, Candidate(steps=cand.steps[: i + 1], model=cand.model))
                   for i, tok in enumerate(cand.steps)]
        if cand.serving:
            stages.append(("serving", "serving " + " ".join(f"{k}={v}" for k, v in cand.serving),
                           dataclasses.replace(cand, draft=None)))
        if cand.draft:
            stages.append(("draft", f"draft {cand.draft}", cand))
        rows: list[dict[str, Any]] = []
        llm: LLM = self.base
        for kind, name, c in stages:
            if kind == "draft":  # the same weights, drafting
                llm = copy.copy(llm)
                llm.set_draft(c.draft)
            elif kind == "student":  # the student as shipped
                self._drop_built()
                llm = self._make(c)
            elif kind == "step":  # one step more, in place (as `llmspeed optimize` applies them)
                if llm is self.base:
                    self._drop_built()
                    llm = LLM(copy.deepcopy(self.base.model), self.base.tokenizer, list(self.base.recipe),
                              self.base.source)
                llm.compress_(name, progress=False)
            with threads_set(c.serving_dict.get("threads")):
                ts = [cycle_time(llm, p, n, self.cfg.repeats) for p, n in work]
            t = {k: statistics.fmean(x[k] for x in ts) for k in ts[0]}
            t0 = rows[0]["T"] if rows else t["T"]
            prev = rows[-1]["T"] if rows else t["T"]
            rows.append({"added": name, "recipe": c.recipe or "original", **t,
                         "cut_pct": 100.0 * (1.0 - t["T"] / t0), "step_cut_pct": 100.0 * (1.0 - t["T"] / prev)})
        if llm is not self.base:
            self._built = (cand.key, llm)  # the chosen model, built step by step: saved as is
        return rows

    def save(self, cand: Candidate, path: Path) -> None:
        """The model directory; a draft is a runtime option (`--draft`) and is not stored in it."""
        self.build(cand).save(path)
