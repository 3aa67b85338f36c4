"""The search loop, pure over a `Measurer` (tests drive it with a deterministic stub):

1. seeds: every `CANDIDATE_SOURCES` entry (the presets first, in the profile verdict's order), then Optuna's TPE
   (two objectives: the objective's score and the screened accuracy-budget use; the budget as its constraint);
2. screening: each candidate on a small eval slice + a short speed run. The slice only *rejects*, and only clear
   violations (excess > `screen_slack`); it never accepts;
3. confirmation: the best survivors by screened score on the full eval — acceptance is decided here alone —
   then one full benchmark of the original and every accepted candidate in the same run; the best accepted wins;
4. no accepted candidate: the best one confirmed is returned marked "over budget", with `accepted=False`, and
   is never saved as the result.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from llmspeed.auto.config import AutoConfig
from llmspeed.auto.result import AutoResult, Measurer, Progress
from llmspeed.auto.space import (
    CANDIDATE_SOURCES,
    Candidate,
    CandidateSource,
    SourceContext,
    optuna_params,
    params_to_candidate,
    server_defaults,
    suggest,
)
from llmspeed.auto.store import TrialStore
from llmspeed.util.progress import heartbeat

log = logging.getLogger(__name__)
SURVIVOR, REJECTED, FAILED, ACCEPTED, OVER = "survivor", "rejected (screen)", "failed", "accepted", "over budget"
ORIGINAL = Candidate(source="original")


def _fmt_left(s: float) -> str:
    return f"{max(s, 0) / 60:.1f} min"


class Search:
    def __init__(self, cfg: AutoConfig, measurer: Measurer, store: TrialStore, study: Any,
                 sources: list[CandidateSource] | None = None, clock: Callable[[], float] = time.monotonic,
                 on_progress: Callable[[Progress], None] | None = None, drafts: tuple[str, ...] = ()) -> None:
        self.cfg, self.m, self.store, self.study = cfg, measurer, store, study
        self.drafts = drafts  # speculative drafts tried on the best survivors (decode with the user's prompts)
        self.sources = CANDIDATE_SOURCES if sources is None else sources
        self.clock = clock
        self.on_progress = on_progress or (lambda p: None)
        self.serving = cfg.objective in ("throughput", "ttft")
        self.facts = measurer.model_facts()  # int4 groups and prune widths that fit the model: no others sampled
        self.records: dict[str, dict[str, Any]] = {r["key"]: r for r in store.records()}
        self.t0 = clock()
        self.deadline = self.t0 + 60.0 * cfg.budget_minutes
        self.trial_deadline = self.t0 + 60.0 * cfg.budget_minutes * (1.0 - cfg.reserve_share)
        self.measured_now: list[str] = []  # keys screened in this process (resume tests read it)

    # -- helpers ------------------------------------------------------------------------------------------
    def _score(self, rec: dict[str, Any], stage: str = "screen") -> float:
        speed = (rec.get(stage) or {}).get("speed") or {}
        return self.cfg.score(speed)

    def _best_label(self) -> str:
        ok = [r for r in self.records.values() if r["status"] in (SURVIVOR, ACCEPTED)]
        if not ok:
            return "none yet"
        r = max(ok, key=self._score)
        key, unit, _ = self.cfg.metric
        return f"{_candidate(r).label()} {r['screen']['speed'].get(key, float('nan')):.1f} {unit}"

    def _progress(self, phase: str) -> None:
        self.on_progress(Progress(len(self.records), self.cfg.max_trials, self._best_label(),
                                  self.deadline - self.clock(), phase))

    # -- phase 1: screening ---------------------------------------------------------------------------------
    def _screen(self, cand: Candidate, twin: dict[str, Any] | None = None) -> dict[str, Any]:
        """Screen one candidate. With `twin` (the same model without the speculative draft: greedy output is
        identical, so its accuracy is the twin's), only the speed is measured and the twin's quality is reused."""
        t = self.clock()
        rec: dict[str, Any] = {"key": cand.key, "number": self.store.next_number(), "candidate": cand.to_dict(),
                               "source": cand.source, "screen": None, "full": None, "bench": None,
                               "machine": self.m.machine(), "started": time.time()}
        if twin is not None:
            rec["quality_from"] = twin["key"]
        label = (f"auto: trial {len(self.records) + 1}/{self.cfg.max_trials} {cand.label()} "
                 f"(best so far {self._best_label()}; {_fmt_left(self.deadline - self.clock())} left)")
        try:
            with heartbeat(label, logger=log):
                if twin is None:
                    res = self.m.screen(cand)
                else:
                    res = {"quality": twin["screen"]["quality"], "speed": self.m.speed(cand)}
        except Exception as e:  # a candidate that cannot be built or run is a failed trial, not a failed search
            log.warning("auto: %s failed: %s", cand.label(), e)
            rec |= {"status": FAILED, "error": f"{type(e).__name__}: {e}"[:500]}
        else:
            exc = self.cfg.criteria.excess(res["quality"])
            rec |= {"screen": res, "screen_excess": exc,
                    "status": REJECTED if max(exc.values()) > self.cfg.screen_slack else SURVIVOR}
        rec["seconds"] = self.clock() - t
        self.records[cand.key] = rec
        self.store.put(rec)
        self.measured_now.append(cand.key)
        return rec

    def _tell(self, trial: Any, rec: dict[str, Any]) -> None:
        from optuna.trial import TrialState

        if rec["status"] == FAILED:
            self.study.tell(trial, state=TrialState.FAIL)
            return
        worst = max(rec["screen_excess"].values())
        worst = min(worst, 1e6)
        score = self._score(rec)
        trial.set_constraint("accuracy_budget", worst - 1.0)  # <= 0: inside the accuracy budget
        trial.set_user_attr("key", rec["key"])
        self.study.tell(trial, [score if math.isfinite(score) else -1e12, worst])

    def _seeds(self, verdict: str | None) -> list[Candidate]:
        ctx = SourceContext(self.cfg.objective, verdict, self.m.max_threads(), self.facts)
        seen, direct = set(), []
        for src in self.sources:
            for c in src(ctx):
                if c.key in seen:
                    continue
                seen.add(c.key)
                if c.params:  # inside the TPE space: enqueued, so the sampler learns from it
                    self.study.enqueue_trial(optuna_params(c.params, self.serving, self.m.max_threads(), self.facts),
                                             user_attrs={"source": c.source}, skip_if_exists=True)
                else:
                    direct.append(c)
        return direct

    def _draft_slots(self) -> int:
        """Trials kept for the draft phase: the original and the best `confirm_top` survivors, each + a draft."""
        if not self.drafts:
            return 0
        return min(1 + (1 + self.cfg.confirm_top) * len(self.drafts), self.cfg.max_trials // 2)

    def screen_phase(self, verdict: str | None) -> None:
        direct = [c for c in self._seeds(verdict) if c.key not in self.records]
        dupes = 0
        limit = self.cfg.max_trials - self._draft_slots()
        while len(self.records) < limit and self.clock() < self.trial_deadline:
            self._progress("screening")
            if direct:
                self._screen(direct.pop(0))
                continue
            trial = self.study.ask()
            p = suggest(trial, self.serving, self.m.max_threads(), self.facts)
            cand = params_to_candidate(p, source=str(trial.user_attrs.get("source", "tpe")))
            if cand.key in self.records:  # measured before (this run or a resumed one): never again
                self._tell(trial, self.records[cand.key])
                dupes += 1
                if dupes > 50:
                    log.info("auto: the sampler keeps proposing measured candidates; screening ends")
                    break
                continue
            self._tell(trial, self._screen(cand))

    def draft_phase(self) -> None:
        """Speculative drafts on the original and on the best survivors by screened score: a draft is lossless, so
        each costs a speed run on the user's prompts (its accuracy is its twin's, never re-evaluated). The runs are
        short and may use the reserve (the full deadline), not the screening deadline; they count as trials."""
        if not self.drafts:
            return
        pool = sorted((r for r in self.records.values() if r["status"] in (SURVIVOR, ACCEPTED, OVER)
                       and not r["candidate"].get("draft") and r["key"] != ORIGINAL.key),
                      key=self._score, reverse=True)
        for base in [ORIGINAL] + [_candidate(r) for r in pool[: self.cfg.confirm_top]]:
            for d in self.drafts:
                dc = replace(base, draft=d, source=f"{base.source}+draft")
                if dc.key in self.records:
                    continue
                if len(self.records) >= self.cfg.max_trials or self.clock() >= self.deadline:
                    return
                twin = self.records.get(base.key)
                if twin is None:  # the original: its own (trivial) screen first, so the draft has a twin
                    twin = self._screen(base)
                    if len(self.records) >= self.cfg.max_trials:
                        return
                if twin.get("screen") is None:
                    continue
                self._progress("drafts")
                self._screen(dc, twin)

    def _confirm(self, rec: dict[str, Any]) -> None:
        """The full eval decides: accepted or over budget (kept in the record, so a resumed run reuses it). A draft
        candidate takes its twin's full eval (confirming the twin first if needed)."""
        if rec.get("full") is not None:
            return
        if rec.get("quality_from"):
            twin = self.records[rec["quality_from"]]
            self._confirm(twin)
            rec |= {"full": twin["full"], "full_excess": twin["full_excess"], "status": twin["status"]}
            self.store.put(rec)
            return
        cand = _candidate(rec)
        with heartbeat(f"auto: full evaluation of {cand.label()} "
                       f"({_fmt_left(self.deadline - self.clock())} left)", logger=log):
            q = self.m.confirm(cand)
        exc = self.cfg.criteria.excess(q)
        rec["full"] = {"quality": q}
        rec["full_excess"] = exc
        rec["status"] = ACCEPTED if max(exc.values()) <= 1.0 else OVER
        self.store.put(rec)

    # -- phase 2: confirmation --------------------------------------------------------------------------------
    def confirm_phase(self) -> list[dict[str, Any]]:
        """Full eval of the best survivors: the top `confirm_top` (fewer once one is accepted and time is up), more while
        none is accepted and time is left."""
        pool = sorted((r for r in self.records.values() if r["status"] in (SURVIVOR, ACCEPTED, OVER)),
                      key=self._score, reverse=True)
        confirmed = []
        for i, rec in enumerate(pool):
            accepted = any(r["status"] == ACCEPTED for r in confirmed)
            late = self.clock() >= self.deadline
            if (accepted and (i >= self.cfg.confirm_top or late)) or (i >= self.cfg.confirm_top and late):
                break  # past the deadline, confirmation goes on only until one candidate is accepted
            self._confirm(rec)
            confirmed.append(rec)
            self._progress("confirming")
        return confirmed

    def _second_look(self, benched: list[dict[str, Any]], accepted: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A benchmarked candidate faster than every accepted one (the short screening run ranked it lower) gets
        its full eval now; the fastest that passes joins the accepted. Acceptance is still the full eval's."""
        best = max((self._score(r, "bench") for r in accepted), default=-math.inf)
        for rec in sorted(benched, key=lambda r: self._score(r, "bench"), reverse=True):
            if self._score(rec, "bench") <= best:
                break
            self._confirm(rec)
            if rec["status"] == ACCEPTED:
                return [*accepted, rec]
        return accepted

    def run(self) -> AutoResult:
        verdict = self.m.verdict() if self.cfg.profile else None
        self.store.set_meta("config", self.cfg.to_dict())
        self.screen_phase(verdict)
        self.draft_phase()
        confirmed = self.confirm_phase()
        accepted = [r for r in confirmed if r["status"] == ACCEPTED]
        res = AutoResult(objective=self.cfg.objective, criteria=self.cfg.criteria.describe(), accepted=False,
                         recipe=None, verdict=verdict)
        mp = self.cfg.criteria.max_ppl_increase
        res.ppl_budget_pct = None if mp is None else 100.0 * mp
        pool = sorted((r for r in self.records.values() if r["status"] in (SURVIVOR, ACCEPTED)),
                      key=self._score, reverse=True)
        base = server_defaults(self.m.max_threads(), self.cfg.served_steps) if self.serving else ORIGINAL
        res.baseline_name = base.source
        rows = [base] + [_candidate(r) for r in (accepted or confirmed[:1])]
        rows += [_candidate(r) for r in pool[: self.cfg.confirm_top]]  # the slice's speed run is short: re-rank
        rows += [_candidate(r) for r in self.records.values()  # the `speed` preset, for comparison
                 if r["source"] == "preset:speed" and r.get("screen")]
        rows = list({c.key: c for c in rows}.values())
        if len(rows) > 1:
            with heartbeat(f"auto: full benchmark of {len(rows)} models (original included, same run)", logger=log):
                bench = self.m.benchmark(rows)
            res.baseline = bench[0]
            for cand, b in zip(rows, bench, strict=True):
                rec = self.records.get(cand.key)  # the baseline is a trial too when the search measured it
                if rec is not None:
                    rec["bench"] = {"speed": b}
                    self.store.put(rec)
            accepted = self._second_look([self.records[c.key] for c in rows[1:]], accepted)
        if accepted:
            best = max(accepted, key=lambda r: self._score(r, "bench"))
            res.accepted, res.recipe, res.chosen = True, best["candidate"]["recipe"], best
            res.serving = dict(best["candidate"]["serving"])
            res.draft = best["candidate"].get("draft")
            key, unit, higher = self.cfg.metric
            v, v0 = best["bench"]["speed"].get(key), res.baseline.get(key)
            if v and v0:
                res.ratio = float(v) / float(v0) if higher else float(v0) / float(v)
            work = f", {self.cfg.concurrency} concurrent requests" if self.serving else ""
            vs = "ratio n/a" if res.ratio is None else f"{res.ratio:.2f}x"
            what = f"{res.baseline_name} ({base.recipe})" if base.recipe else res.baseline_name
            res.message = (f"chose {_candidate(best).label()}: {key} {_num(v)} {unit} vs {_num(v0)} for the "
                           f"{what} ({vs}, same run{work}); {self.cfg.criteria.describe()} holds on "
                           "the full eval")
            if res.draft:
                res.message += (f"; run it with --draft {res.draft} (speculative decoding is a runtime option, "
                                "not stored in the model directory)")
            if self.cfg.ablation:
                with heartbeat("auto: ablation (each step added in turn)", logger=log):
                    res.ablation = self.m.ablation(_candidate(best))
        elif confirmed:
            best = max(confirmed, key=lambda r: self._score(r, "bench" if r.get("bench") else "screen"))
            res.best_over_budget = best
            res.message = (f"no candidate meets {self.cfg.criteria.describe()} on the full eval; the best found, "
                           f"{_candidate(best).label()}, is OVER BUDGET (worst excess "
                           f"{max(best['full_excess'].values()):.2f}x) and is not saved")
        else:
            res.message = (f"no candidate survived screening against {self.cfg.criteria.describe()} "
                           f"({len(self.records)} trials); nothing saved")
        res.trials = sorted(self.records.values(), key=lambda r: r["number"])
        res.seconds = self.clock() - self.t0
        return res


def _num(v: Any) -> str:
    return "?" if v is None else f"{float(v):.2f}"


def _candidate(rec: dict[str, Any]) -> Candidate:
    c = rec["candidate"]
    return Candidate(steps=tuple(c["steps"]), serving=tuple(sorted(c["serving"].items())), source=c["source"],
                     model=c.get("model"), draft=c.get("draft"), params=dict(c.get("params") or {}))
