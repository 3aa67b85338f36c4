"""`llmspeed.evaluate`: perplexity (in- and out-of-domain), KL / top-1 agreement vs a baseline, last-word accuracy.

All metrics use the conventions declared in perplexity.py, agreement.py and tasks.py; the returned dict
carries the token counts and the plays used so a number is never reported without what it was measured on.
Default sizes keep SmolLM2-135M (with a baseline) near 2 minutes on 2 cores.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmspeed.data.texts import TextSource, pydoc_topics, resolve_text
from llmspeed.evaluation.agreement import AgreementAccumulator
from llmspeed.evaluation.parallel import Pool, model_ref, window_stats
from llmspeed.evaluation.perplexity import (
    DEFAULT_WINDOW,
    NLLAccumulator,
    TokenWindows,
    perplexity,
    ppl_report,
    token_windows,
)
from llmspeed.evaluation.tasks import lastword_accuracy, lastword_passages, lastword_report

log = logging.getLogger(__name__)
LASTWORD_BATCH = 16  # passages per forward (a data-parallel worker gets whole batches)


@dataclass(frozen=True)
class EvalConfig:
    max_tokens: int = 16384  # N of the primary text (in-domain: held-out plays)
    ood_max_tokens: int = 8192  # N of the out-of-domain text (pydoc topics); 0 = skip
    window: int = DEFAULT_WINDOW
    lastword_n: int = 300  # passages of the last-word task; 0 = skip
    lastword_context: int = 64  # tokens of context before the last word

    def __post_init__(self) -> None:
        if self.max_tokens < 2:
            raise ValueError(f"max_tokens must be >= 2, got {self.max_tokens}")
        if self.ood_max_tokens < 0 or self.lastword_n < 0:
            raise ValueError("ood_max_tokens and lastword_n must be >= 0")
        if self.window < 2 or self.lastword_context < 1:
            raise ValueError(f"window must be >= 2 and lastword_context >= 1, got {self.window}, "
                             f"{self.lastword_context}")


def resolve_baseline(baseline: Any) -> Any:
    """None / "none" -> no baseline; "default" or a path -> llmspeed.load(...); an LLM is used as is."""
    if baseline is None or (isinstance(baseline, str) and baseline.lower() == "none"):
        return None
    if isinstance(baseline, (str, Path)):
        import llmspeed

        return llmspeed.load(baseline)
    if not hasattr(baseline, "logits"):
        raise ValueError(f"baseline must be None, 'none', 'default', a model path or an LLM, got {baseline!r}")
    return baseline


def _primary(llm: Any, base: Any, src: TextSource, cfg: EvalConfig, window: int, pool: Pool | None) -> dict[str, Any]:
    """PPL of llm (and baseline) and their agreement on the same windows, one forward per model per window;
    with a pool the windows are split over its workers and reduced here in window order (identical results)."""
    wins = token_windows(llm.tokenizer, src, cfg.max_tokens, window)
    acc, base_acc, agree = NLLAccumulator(), NLLAccumulator(), AgreementAccumulator()
    stats = pool.map_windows(wins.windows, base is not None) if pool is not None else \
        (window_stats(llm, base, w) for w in wins.windows)
    for s in stats:
        acc.add(s["nll"])
        if base is not None:
            base_acc.add(s["base_nll"])
            agree.add_stats(s["kl"], s["agree"])
    out = ppl_report(acc, wins)
    if base is not None:
        out |= {"baseline_ppl": base_acc.ppl, "delta_ppl_pct": 100.0 * (acc.ppl / base_acc.ppl - 1.0)}
        out |= agree.report()
    return out


def evaluate(llm: Any, baseline: Any = None, text: str | Path | TextSource = "shakespeare",
             max_tokens: int = 16384, *, ood_max_tokens: int = 8192, window: int = DEFAULT_WINDOW,
             lastword_n: int = 300, lastword_context: int = 64, workers: int = 1) -> dict[str, Any]:
    """Quality of `llm`, optionally against `baseline` (None, "none", "default", a path or an LLM).

    Returns a flat dict: `ppl` (primary text: held-out plays unless `text` is "pydoc" or a file), `n_tokens`,
    `window`, `parts` (tokens per play), `convention`; `ppl_ood` + `ood` (pydoc topics, only when the
    primary text is Shakespeare); with a baseline: `baseline_ppl`, `delta_ppl_pct`, `kl_mean` (= `kl`),
    `kl_p99`, `top1_agreement`, `kl_tokens`; `lastword_accuracy` (+ `baseline_lastword_accuracy`) and
    `lastword` details (Shakespeare only); `seconds`.
    `workers` > 1: the windows and passages are split over that many processes (evaluation/parallel.py), with
    results identical to one process.
    """
    cfg = EvalConfig(max_tokens=max_tokens, ood_max_tokens=ood_max_tokens, window=window, lastword_n=lastword_n,
                     lastword_context=lastword_context)
    t0 = time.perf_counter()
    src = resolve_text(text)
    base = resolve_baseline(baseline)
    if base is not None and base.tokenizer.vocab_size != llm.tokenizer.vocab_size:
        raise ValueError("baseline and model use different tokenizers: KL / agreement need the same vocabulary")
    max_pos = min(llm.config.max_position, base.config.max_position if base is not None else 1 << 30)
    win = min(cfg.window, max_pos)
    out: dict[str, Any] = {"model": getattr(llm, "source", ""), "recipe": ",".join(getattr(llm, "recipe", []))}
    log.info("evaluate: perplexity on %s (%d tokens, equal shares per part)", src.name, cfg.max_tokens)
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    pool, tmp = None, None
    if workers > 1:
        ref, tmp = model_ref(llm, None)
        base_ref = None
        if base is not None:
            base_ref, tmp = model_ref(base, tmp)
        pool = Pool(ref, base_ref, workers)
    try:
        out |= _evaluate(llm, base, src, cfg, win, max_pos, pool)
    finally:
        if pool is not None:
            pool.close()
        if tmp is not None:
            tmp.cleanup()
    out["seconds"] = time.perf_counter() - t0
    out["workers"] = workers
    return out


def _evaluate(llm: Any, base: Any, src: TextSource, cfg: EvalConfig, win: int, max_pos: int,
              pool: Pool | None) -> dict[str, Any]:
    out = _primary(llm, base, src, cfg, win, pool)
    if base is not None:
        out["kl"] = out["kl_mean"]
    is_shakespeare = src.name == "shakespeare"
    if is_shakespeare and cfg.ood_max_tokens >= 2:
        log.info("evaluate: out-of-domain perplexity (pydoc topics, %d tokens)", cfg.ood_max_tokens)
        ood_wins = token_windows(llm.tokenizer, pydoc_topics(), cfg.ood_max_tokens, win)
        if pool is not None:
            ood, base_ood = _pool_ppl(pool, ood_wins, base is not None)
        else:
            ood, base_ood = perplexity(llm, ood_wins), perplexity(base, ood_wins) if base is not None else None
        out["ppl_ood"] = ood["ppl"]
        out["ood"] = {k: v for k, v in ood.items() if k != "parts"} | {"n_topics": len(ood["parts"])}
        if base_ood is not None:
            out["baseline_ppl_ood"] = base_ood["ppl"]
    if is_shakespeare and cfg.lastword_n > 0:
        log.info("evaluate: last-word accuracy on %d held-out passages", cfg.lastword_n)
        passages = lastword_passages(llm.tokenizer, cfg.lastword_n, min(cfg.lastword_context, max_pos - 8))
        if pool is not None:
            mine, theirs = pool.map_lastword(passages, LASTWORD_BATCH, base is not None)
            lw = lastword_report(passages, mine)
            base_lw = lastword_report(passages, theirs) if theirs is not None else None
        else:
            lw = lastword_accuracy(llm, passages, LASTWORD_BATCH)
            base_lw = lastword_accuracy(base, passages, LASTWORD_BATCH) if base is not None else None
        out["lastword_accuracy"] = lw["lastword_accuracy"]
        out["lastword"] = {k: v for k, v in lw.items() if k != "correct"}
        if base_lw is not None:
            out["baseline_lastword_accuracy"] = base_lw["lastword_accuracy"]
    return out


def _pool_ppl(pool: Pool, wins: TokenWindows, with_base: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Perplexity of the model (and the baseline) on `wins` from the workers' per-window NLLs, in window order."""
    acc, base_acc = NLLAccumulator(), NLLAccumulator()
    for s in pool.map_windows(wins.windows, with_base):
        acc.add(s["nll"])
        if with_base:
            base_acc.add(s["base_nll"])
    return ppl_report(acc, wins), (ppl_report(base_acc, wins) if with_base else None)
