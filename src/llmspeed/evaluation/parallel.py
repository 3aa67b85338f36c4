"""Data-parallel evaluation: the windows (and last-word batches) of `evaluate` split over worker processes.

Every metric is a reduction over independent items — a perplexity window, a pair of windows for KL / agreement,
a batch of last-word passages — so a worker computes the per-item statistics (NLL per token, KL per token, top-1
matches, correct flags) and the parent reduces them in the items' order, exactly as one process does: the results
are identical, not just close (a model's forward gives the same numbers at any thread count here; the test checks
equality). Workers are a spawn-context process pool; each loads the model (and the baseline) once from a
`ModelRef`: the `--model` value, dtype and recipe it was loaded with, or a directory the parent saved a model
into when it was changed after loading (so a calibrated recipe is never re-run differently).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

import torch
import torch.nn.functional as F

from llmspeed.evaluation.agreement import kl_from_logprobs, top1_agree
from llmspeed.evaluation.perplexity import nll_from_logprobs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRef:
    """How a worker loads the same model: `llmspeed.load(model, dtype=dtype, recipe=recipe)`."""

    model: str
    dtype: str = "float32"
    recipe: str | None = None
    plans: tuple[dict, ...] = ()  # the parent's per-layer ExecPlans (runtime/plans.current_plans), applied as is


def _load(ref: ModelRef, threads: int) -> Any:
    import llmspeed
    from llmspeed.runtime.plans import apply_plans

    llm = llmspeed.load(ref.model, dtype=ref.dtype, recipe=ref.recipe, threads=threads)
    if ref.plans:
        apply_plans(llm.model, list(ref.plans))
    return llm


def window_stats(llm: Any, base: Any, w: torch.Tensor) -> dict[str, Any]:
    """One window's statistics: NLL per predicted token [W-1] (float64) and, with a baseline, its NLL, the KL per
    token and the number of top-1 matches."""
    ids = w.unsqueeze(0)  # [1, W]
    lp = F.log_softmax(llm.logits(ids)[0, :-1].float().cpu(), dim=-1)  # [W-1, V]
    out: dict[str, Any] = {"nll": nll_from_logprobs(lp, w)}
    if base is not None:
        ref = F.log_softmax(base.logits(ids)[0, :-1].float().cpu(), dim=-1)  # [W-1, V]
        out |= {"base_nll": nll_from_logprobs(ref, w), "kl": kl_from_logprobs(ref, lp),
                "agree": int(top1_agree(ref, lp).sum())}
    return out


# -- the worker side: one process, its models loaded once by the pool's initializer ------------------------------
_WORKER: dict[str, Any] = {}  # this worker process's models (set by _init); the parent never fills it


def _init(ref: ModelRef, base: ModelRef | None, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER["llm"] = _load(ref, threads)
    _WORKER["base"] = None if base is None else _load(base, threads)


def _windows_task(windows: list[torch.Tensor], with_base: bool) -> list[dict[str, Any]]:
    return [window_stats(_WORKER["llm"], _WORKER["base"] if with_base else None, w) for w in windows]


def _lastword_task(passages: list[Any], batch_size: int, with_base: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    from llmspeed.evaluation.tasks import lastword_correct

    base = _WORKER["base"]
    return (lastword_correct(_WORKER["llm"], passages, batch_size),
            lastword_correct(base, passages, batch_size) if with_base and base is not None else None)


# -- the parent side ----------------------------------------------------------------------------------------------
def chunks(items: Sequence[Any], n: int, align: int = 1) -> list[list[Any]]:
    """`items` in order, cut into at most `n` contiguous chunks whose sizes are multiples of `align` (the last one
    excepted), so batches of `align` items are formed exactly as one process forms them."""
    n_groups = -(-len(items) // align)
    per = -(-n_groups // max(n, 1)) * align  # items per chunk, a multiple of `align`
    return [list(items[i:i + per]) for i in range(0, len(items), per)]


class Pool:
    """`workers` processes holding the model and the baseline; `map_windows` / `map_lastword` keep item order."""

    def __init__(self, ref: ModelRef, base: ModelRef | None, workers: int) -> None:
        if workers < 2:
            raise ValueError(f"a data-parallel pool needs >= 2 workers, got {workers}")
        self.workers = workers
        threads = max(1, (os.cpu_count() or 1) // workers)
        self.ex = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init,
                                      initargs=(ref, base, threads))

    def _map(self, fn: Callable[..., Any], parts: list[list[Any]], *args: Any) -> list[Any]:
        return [f.result() for f in [self.ex.submit(fn, p, *args) for p in parts]]

    def map_windows(self, windows: Sequence[torch.Tensor], with_base: bool) -> list[dict[str, Any]]:
        return [s for part in self._map(_windows_task, chunks(windows, self.workers), with_base) for s in part]

    def map_lastword(self, passages: Sequence[Any], batch_size: int,
                     with_base: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        res = self._map(_lastword_task, chunks(passages, self.workers, batch_size), batch_size, with_base)
        mine = torch.cat([r[0] for r in res])
        return mine, (torch.cat([r[1] for r in res]) if with_base else None)

    def close(self) -> None:
        self.ex.shutdown(wait=True, cancel_futures=True)


def model_ref(llm: Any, tmp: tempfile.TemporaryDirectory | None) -> tuple[ModelRef, tempfile.TemporaryDirectory | None]:
    """How workers load `llm`: its load arguments while it is unchanged since `llmspeed.load`, else a saved copy."""
    from llmspeed.runtime.plans import current_plans

    plans = tuple(current_plans(llm.model))
    args = getattr(llm, "load_args", None)
    if args is not None:
        return ModelRef(**args, plans=plans), tmp
    tmp = tmp or tempfile.TemporaryDirectory(prefix="llmspeed-eval-")
    path = os.path.join(tmp.name, f"m{len(os.listdir(tmp.name))}")
    log.info("evaluate --workers: saving the changed model to %s for the workers", path)
    llm.save(path)
    return ModelRef(path, str(llm.dtype).removeprefix("torch."), plans=plans), tmp
