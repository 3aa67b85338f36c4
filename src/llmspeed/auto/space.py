"""The search space: a candidate is a recipe (compression steps) plus, for serving objectives, engine settings.

One parameterization serves three users: the presets (`speed`, `speed-a8`, `int8`, ...) are written as parameter
dicts (so Optuna's TPE learns from them as enqueued trials), `suggest(trial, ...)` samples the same parameters
conditionally, and `params_to_candidate` turns any of them into a recipe whose steps are the registry's own names
(compress/api.py, compress/presets.py). Step order is fixed (the presets' order):
prune -> svd -> head -> weights -> a8 -> compile.

Extension point: `CANDIDATE_SOURCES` lists functions `(SourceContext) -> list[Candidate]` evaluated before the TPE
search, outside its parameter space. The presets are the first source; distilled students (a different `model`
directory) plug in here. Speculative drafts (`draft`) are not a source: the search adds them to its best survivors
(search.py, `draft_phase`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmspeed.serving.config import SERVE_MAX_BATCH, SERVE_MAX_BATCH_TOKENS

WEIGHTS = ("none", "int8", "int8-dyn", "int4")
INT4_GROUPS = (32, 64, 128)
HEADS = ("none", "int8-head", "int8-head-g32")
PRUNES = ("none", "magnitude", "wanda", "2:4", "wanda-2:4", "mlp")
PRUNE_AMOUNTS = {"magnitude": (10, 20, 30, 50), "wanda": (10, 20, 30, 50), "mlp": (5, 10, 20)}
SVDS = ("none", "e0.99", "e0.95", "e0.9")
DRAFTS = ("ngram",)  # speculative drafts tried for `decode` on the user's prompts (prompt lookup, lossless)
MAX_BATCH = (4, 8, 16, 32)
BATCH_TOKENS = (512, 1024, 2048, 4096)

@dataclass(frozen=True)
class ModelFacts:
    """What the space needs to know of the model so that no sampled recipe fails on its shapes."""

    int4_groups: tuple[int, ...] = INT4_GROUPS  # group sizes dividing every quantized layer's K
    mlp_units: int | None = None  # SwiGLU channels per layer (intermediate_size); None: unknown

    @property
    def mlp_amounts(self) -> tuple[float, ...]:
        """prune-mlp percentages near 5, 10 and 20 % that remove a multiple of the largest int4 group (so the kept
        width still takes every group; SmolLM2-135M: 4.1667, 8.3333, 20.8333 % of 1536 = 64, 128, 320
        channels), or the plain ones where the width is no such multiple."""
        if not self.mlp_fits_int4:
            return PRUNE_AMOUNTS["mlp"]
        g, n = max(self.int4_groups), self.mlp_units
        assert n is not None
        out: list[float] = []
        for target in PRUNE_AMOUNTS["mlp"]:
            r = max(1, round(target / 100.0 * n / g)) * g
            pct = round(100.0 * r / n, 4)
            if r < n and int(pct / 100.0 * n + 0.5) == r and pct not in out:  # prune-mlp's own rounding agrees
                out.append(pct)
        return tuple(out)

    @property
    def mlp_fits_int4(self) -> bool:
        """Whether the MLP width is a multiple of the largest int4 group (then pruned widths can stay one)."""
        return bool(self.int4_groups) and bool(self.mlp_units) and self.mlp_units % max(self.int4_groups) == 0


BASE_PARAMS: dict[str, Any] = {"weights": "none", "head": "none", "a8": False, "prune": "none", "svd": "none",
                               "compile": False}


@dataclass(frozen=True)
class Candidate:
    """What one trial measures. `steps` are recipe tokens; `serving` holds engine settings (max_batch,
    max_batch_tokens, threads) for throughput/ttft; `model` replaces the user's model (a distilled student);
    `draft` names a speculative draft (`--draft` spec, e.g. "ngram"): lossless, so its accuracy is that of the same
    candidate without it."""

    steps: tuple[str, ...] = ()
    serving: tuple[tuple[str, int], ...] = ()
    source: str = "tpe"
    model: str | None = None
    draft: str | None = None
    params: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def recipe(self) -> str:
        return ",".join(self.steps)

    @property
    def serving_dict(self) -> dict[str, int]:
        return dict(self.serving)

    @property
    def key(self) -> str:
        """Identity of a candidate across runs (resume): what is measured, not where it came from."""
        return json.dumps({"steps": list(self.steps), "serving": dict(self.serving), "model": self.model,
                           "draft": self.draft}, sort_keys=True)

    def label(self) -> str:
        s = self.recipe or "original"
        if self.model:
            s = f"{Path(self.model).name}:{s}"
        if self.draft:
            s += f" +draft {self.draft}"
        if self.serving:
            s += " [" + " ".join(f"{k}={v}" for k, v in self.serving) + "]"
        return s

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["serving"] = dict(self.serving)
        d["steps"] = list(self.steps)  # the same shape as a record read back from trials.db
        d["recipe"] = self.recipe
        return d


def params_to_steps(p: dict[str, Any]) -> tuple[str, ...]:
    """Parameter dict -> recipe tokens in the fixed order."""
    p = BASE_PARAMS | p
    steps: list[str] = []
    prune = p["prune"]
    if prune in ("magnitude", "wanda", "mlp"):
        steps.append(f"prune-{prune}-{float(p['prune_amount']):g}")
    elif prune in ("2:4", "wanda-2:4"):
        steps.append(f"prune-{prune}")
    if p["svd"] != "none":
        steps.append(f"svd-{p['svd']}")
    if p["head"] != "none":
        steps.append(p["head"])
    w = p["weights"]
    if w in ("int8", "int8-dyn"):
        steps.append(w)
    elif w == "int4":
        tok = f"int4-g{int(p['group'])}-{p['grid']}"
        steps.append(tok + ("-gptq" if p.get("gptq") else ""))
    if p["a8"] and w in ("int8", "int4"):
        steps.append("a8")
    if p["compile"]:
        steps.append("compile")
    return tuple(steps)


def params_to_candidate(p: dict[str, Any], source: str = "tpe") -> Candidate:
    serving = tuple(sorted((k, int(p[k])) for k in ("max_batch", "max_batch_tokens", "threads") if k in p))
    return Candidate(steps=params_to_steps(p), serving=serving, source=source, params=dict(p))


def suggest(trial: Any, serving: bool, max_threads: int, facts: ModelFacts = ModelFacts()) -> dict[str, Any]:
    """Sample one candidate's parameters from an Optuna trial (conditional space). `facts`: the int4 group sizes
    that fit the model (none -> no int4) and the prune-mlp amounts that keep its widths int4-friendly."""
    weights = [w for w in WEIGHTS if w != "int4" or facts.int4_groups]
    p: dict[str, Any] = {"weights": trial.suggest_categorical("weights", weights)}
    if p["weights"] == "int4":
        p["group"] = trial.suggest_categorical("group", list(facts.int4_groups))
        p["grid"] = trial.suggest_categorical("grid", ["asym", "sym"])
        p["gptq"] = trial.suggest_categorical("gptq", [False, True])
    p["head"] = trial.suggest_categorical("head", list(HEADS))
    if p["weights"] in ("int8", "int4"):
        p["a8"] = trial.suggest_categorical("a8", [False, True])
    # pruning and low-rank are gated by a yes/no first: sampled as one of six kinds (or four energies), a random
    # start pruned 5 trials in 6 and the first 30-min run spent most of its trials on ruined models
    p["prune"] = (trial.suggest_categorical("prune", list(PRUNES[1:]))
                  if trial.suggest_categorical("prune_on", [False, True]) else "none")
    if p["prune"] == "mlp" and p["weights"] == "int4" and not facts.mlp_fits_int4:  # widths no group divides
        p["prune"] = "none"
    if p["prune"] in PRUNE_AMOUNTS:
        amounts = facts.mlp_amounts if p["prune"] == "mlp" else PRUNE_AMOUNTS[p["prune"]]
        p["prune_amount"] = trial.suggest_categorical(f"amount_{p['prune']}", list(amounts))
    # low-rank factors get per-layer ranks (svd-e) that int4's groups do not divide: such a trial could only fail
    p["svd"] = "none"
    if p["weights"] != "int4" and trial.suggest_categorical("svd_on", [False, True]):
        p["svd"] = trial.suggest_categorical("svd", list(SVDS[1:]))
    # int8-dyn's packed fbgemm weights do not export (the AOT runner falls back to dynamo, which breaks the graph
    # at every layer and recompiles per shape): compiling it only costs the trial its time
    p["compile"] = trial.suggest_categorical("compile", [False, True]) if p["weights"] != "int8-dyn" else False
    if serving:
        p["max_batch"] = trial.suggest_categorical("max_batch", list(MAX_BATCH))
        p["max_batch_tokens"] = trial.suggest_categorical("max_batch_tokens", list(BATCH_TOKENS))
        p["threads"] = trial.suggest_int("threads", 1, max(1, max_threads))
    return p


class _Replay:
    """Answers `suggest` from a parameter dict and records the Optuna names asked (for `study.enqueue_trial`)."""

    def __init__(self, p: dict[str, Any]) -> None:
        self.p, self.asked = p, {}

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        if name in ("prune_on", "svd_on"):
            v = self.p[name[:-3]] != "none"
        else:
            v = self.p["prune_amount"] if name.startswith("amount_") else self.p[name]
        if v not in choices:
            raise ValueError(f"{name}={v!r} is not one of {choices}")
        self.asked[name] = v
        return v

    def suggest_int(self, name: str, low: int, high: int) -> int:
        v = int(self.p[name])
        self.asked[name] = v
        return v


def optuna_params(p: dict[str, Any], serving: bool, max_threads: int,
                  facts: ModelFacts = ModelFacts()) -> dict[str, Any]:
    """A parameter dict as Optuna's trial would hold it (only the names `suggest` asks, amounts per kind)."""
    rec = _Replay(BASE_PARAMS | p)
    suggest(rec, serving, max_threads, facts)
    return rec.asked


# -- presets as parameters (tests check they expand to compress/presets.py's steps) -------------------------
_INT4_32A = {"weights": "int4", "group": 32, "grid": "asym", "gptq": False}
PRESET_PARAMS: dict[str, dict[str, Any]] = {
    "speed": BASE_PARAMS | _INT4_32A | {"head": "int8-head", "compile": True},
    "speed-a8": BASE_PARAMS | _INT4_32A | {"head": "int8-head", "a8": True, "compile": True},
    "int8": BASE_PARAMS | {"weights": "int8"},
    "int8,compile": BASE_PARAMS | {"weights": "int8", "compile": True},
    "int4-g32-asym": BASE_PARAMS | _INT4_32A,
    "int8-dyn": BASE_PARAMS | {"weights": "int8-dyn"},
    "compile": BASE_PARAMS | {"compile": True},
    "int8-head,int8,a8,compile": BASE_PARAMS | {"weights": "int8", "head": "int8-head", "a8": True, "compile": True},
}
# The `speed` family's neighbours, one step each (head grid, int4 group size, a8): the trade-offs a front is made
# of, seeded because TPE alone found few of them in a 30-min run (3 non-dominated points of 13 measured)
_HEAD32 = {"head": "int8-head-g32"}
NEIGHBOUR_PARAMS: dict[str, dict[str, Any]] = {
    "int4-g32-asym,compile": BASE_PARAMS | _INT4_32A | {"compile": True},
    "int8-head-g32,int4-g32-asym,compile": PRESET_PARAMS["speed"] | _HEAD32,
    "int8-head-g32,int4-g32-asym,a8,compile": PRESET_PARAMS["speed-a8"] | _HEAD32,
    "int8-head,int4-g64-asym,compile": PRESET_PARAMS["speed"] | {"group": 64},
    "int8-head,int4-g64-asym,a8,compile": PRESET_PARAMS["speed-a8"] | {"group": 64},
    "int8-head,int4-g128-asym,a8,compile": PRESET_PARAMS["speed-a8"] | {"group": 128},  # where 128 fits K
}
# `llmspeed serve`'s defaults (serving/config.py, the one place for them): the presets' serving settings and the
# throughput / ttft baseline ("server defaults", with the server's default threads = physical cores)
SERVING_DEFAULTS = {"max_batch": SERVE_MAX_BATCH, "max_batch_tokens": SERVE_MAX_BATCH_TOKENS}


def server_defaults(max_threads: int, steps: tuple[str, ...] = ()) -> Candidate:
    """The throughput / ttft baseline: the model `llmspeed serve` runs by default (`steps` on the original, e.g. the
    shipped GGUF's int4 blocks and the background-compiled decode) with its engine settings and threads."""
    serving = SERVING_DEFAULTS | {"threads": max(1, max_threads)}
    return Candidate(steps=canonical_steps(steps), serving=tuple(sorted(serving.items())), source="server defaults")


_STAGES = (("prune-",), ("svd-",), ("int8-head",), ("int8", "int4-"), ("a8",), ("compile",))


def canonical_steps(steps: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Recipe tokens in the search's fixed order (prune -> svd -> head -> weights -> a8 -> compile), so a recipe
    written in another order gets the key of the same candidate sampled by the search."""
    def stage(tok: str) -> int:
        return next((i for i, heads in enumerate(_STAGES) if tok.startswith(heads)), len(_STAGES))

    return tuple(sorted(steps, key=stage))  # sorted() is stable: tokens of one stage keep their order


def _bytes_rank(p: dict[str, Any]) -> int:
    return {"int4": 0, "int8": 1, "int8-dyn": 1, "none": 2}[p["weights"]] * 2 + (p["head"] == "none")


def seed_order(verdict: str | None) -> list[str]:
    """Preset names in the order the profile's verdict suggests: memory-bound -> fewer bytes first;
    overhead-bound -> compile first; otherwise the presets as listed (the `speed` family first)."""
    names = list(PRESET_PARAMS)
    if verdict == "memory-bound":
        return sorted(names, key=lambda n: (_bytes_rank(PRESET_PARAMS[n]), not PRESET_PARAMS[n]["compile"]))
    if verdict == "overhead-bound":
        return sorted(names, key=lambda n: (not PRESET_PARAMS[n]["compile"], _bytes_rank(PRESET_PARAMS[n])))
    return names


@dataclass(frozen=True)
class SourceContext:
    objective: str
    verdict: str | None
    max_threads: int
    facts: ModelFacts = ModelFacts()

    def fits(self, p: dict[str, Any]) -> bool:
        """Whether a parameter dict's int4 group (if any) fits the model."""
        return p.get("weights") != "int4" or p.get("group") in self.facts.int4_groups


def preset_source(ctx: SourceContext) -> list[Candidate]:
    out = []
    for name in seed_order(ctx.verdict):
        p = dict(PRESET_PARAMS[name])
        if not ctx.fits(p):
            continue
        if ctx.objective in ("throughput", "ttft"):
            p |= SERVING_DEFAULTS | {"threads": ctx.max_threads}
        out.append(params_to_candidate(p, source=f"preset:{name}"))
    return out


def neighbour_source(ctx: SourceContext) -> list[Candidate]:
    """`NEIGHBOUR_PARAMS` (after the presets), for the single-stream objectives only: a serving trial costs about
    twice a decode trial, and those runs need their trials for the serving settings."""
    if ctx.objective in ("throughput", "ttft"):
        return []
    return [params_to_candidate(p, source=f"neighbour:{name}") for name, p in NEIGHBOUR_PARAMS.items()
            if ctx.fits(p)]


CandidateSource = Callable[[SourceContext], list[Candidate]]
# Each source's candidates are screened like any other trial. The presets come first, then the `speed` family's
# neighbours; `student_source` adds distilled students (`--student DIR`).
CANDIDATE_SOURCES: list[CandidateSource] = [preset_source, neighbour_source]
STUDENT_STEPS: tuple[tuple[str, ...], ...] = ((), ("int8",))  # each student as shipped, and with int8 weights


def check_student(path: str | Path) -> str:
    """A student directory (any llmspeed / Hugging Face model directory) as its absolute path; ValueError else."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ValueError(f"--student {path}: no such directory")
    if not (p / "config.json").is_file():
        raise ValueError(f"--student {path}: not a model directory (no config.json)")
    return str(p.resolve())


def student_source(paths: list[str]) -> CandidateSource:
    """Distilled students as candidates (`Candidate.model`), judged against the original (the teacher) like any
    other: each as shipped and with int8 weights on top (cheap: no calibration); serving objectives give them the
    presets' serving settings."""

    def source(ctx: SourceContext) -> list[Candidate]:
        out = []
        for path in paths:
            serving = server_defaults(ctx.max_threads).serving if ctx.objective in ("throughput", "ttft") else ()
            for steps in STUDENT_STEPS:
                out.append(Candidate(steps=steps, serving=serving, model=path, source=f"student:{Path(path).name}"))
        return out

    return source
