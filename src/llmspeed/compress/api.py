"""Compression API: step registry, `Recipe`, `compress_`, `restore_structure`, module helpers.

A *step* is a plug-in found by regex on a recipe token (`int4-g32`, `prune-wanda-50`, ...):

    @register_step(r"int4-g(?P<group>\\d+)(?P<asym>-asym)?", form="int4-g{32,64,128}[-asym]",
                   config=lambda group, asym: Int4Config(int(group), symmetric=asym is None))
    def int4_step(model, cfg, calib) -> StepReport: ...

`config` receives the regex's named groups (strings, or None when absent) as keyword arguments and
returns a frozen dataclass that validates itself in `__post_init__` (so `int4-g33` is a ValueError).
A step that changes module structure provides `restore(model, cfg)`: it rebuilds that structure on a
META-device model (shapes only) before the saved tensors are assigned. A config with a `token` property names
the step's explicit form, which is what a saved recipe records (`int4-g32` -> `int4-g32-asym`).

`compress_` works on an `nn.Module`; `LLM.compress_` is the thin wrapper that also records the recipe, supplies
calibration data from its tokenizer and rebuilds the engine.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

StepFn = Callable[[nn.Module, Any, Any], "StepReport"]  # (model, config, Calibration | None)


@dataclass
class StepReport:
    """What one step did: which modules changed, which were skipped and why, free-form notes."""

    step: str
    changed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # module name -> reason
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        s = f"{self.step}: {len(self.changed)} modules changed"
        if self.skipped:
            s += f", {len(self.skipped)} skipped"
        if self.notes:
            s += "; " + "; ".join(self.notes)
        return s


@dataclass(frozen=True)
class NoConfig:
    """Config of a step that takes no parameters."""


@dataclass(frozen=True)
class StepSpec:
    pattern: str
    fn: StepFn
    form: str  # human-readable form for error messages, e.g. "int4-g{32,64,128}[-asym]"
    config: Callable[..., Any]
    needs_calibration: bool = False
    structural: bool = False
    restore: Callable[..., None] | None = None
    help: str = ""
    devices: tuple[str, ...] = ("cpu",)  # device types the step's modules run on (C++ kernels: CPU only)

    def make_config(self, token: str) -> Any:
        m = re.fullmatch(self.pattern, token)
        if m is None:
            raise ValueError(f"{token!r} does not match {self.form}")
        try:
            return self.config(**m.groupdict())
        except ValueError as e:
            raise ValueError(f"invalid step {token!r}: {e}") from None


class StepRegistry:
    """Ordered registry of step specs; `parse(token)` finds the spec whose regex matches the whole token."""

    def __init__(self) -> None:
        self._specs: list[StepSpec] = []
        self._aliases: dict[str, tuple[str, ...]] = {}  # preset name -> steps (e.g. "speed")
        self._loaded = False

    def add(self, spec: StepSpec) -> None:
        self._specs = [s for s in self._specs if s.pattern != spec.pattern] + [spec]

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._loaded = True
            from llmspeed.compress import load_builtin_steps

            load_builtin_steps()

    def specs(self) -> list[StepSpec]:
        self._ensure_loaded()
        return list(self._specs)

    def add_alias(self, name: str, steps: tuple[str, ...]) -> None:
        self._aliases[name] = steps

    def expand(self, token: str) -> tuple[str, ...]:
        """A preset name -> its steps; any other token -> itself."""
        self._ensure_loaded()
        return self._aliases.get(token.strip(), (token,))

    def known_forms(self) -> list[str]:
        return [s.form for s in self.specs()] + sorted(self._aliases)

    def parse(self, token: str) -> tuple[StepSpec, Any]:
        token = token.strip()
        for spec in self.specs():
            if re.fullmatch(spec.pattern, token):
                return spec, spec.make_config(token)
        raise ValueError(f"unknown compression step {token!r}; known steps: {', '.join(self.known_forms())}")


STEPS = StepRegistry()


def register_step(name_pattern: str, *, form: str | None = None, config: Callable[..., Any] | None = None,
                  needs_calibration: bool = False, structural: bool = False,
                  restore: Callable[..., None] | None = None, help: str = "",
                  devices: tuple[str, ...] = ("cpu",)) -> Callable[[StepFn], StepFn]:
    """Decorator registering `fn(model, cfg, calib) -> StepReport` for tokens matching `name_pattern`.
    `devices`: the device types (`cpu`, `cuda`) the modules the step produces can run on."""
    re.compile(name_pattern)  # fail at registration, not at first use

    def deco(fn: StepFn) -> StepFn:
        STEPS.add(StepSpec(pattern=name_pattern, fn=fn, form=form or name_pattern,
                           config=config or (lambda **_: NoConfig()), needs_calibration=needs_calibration,
                           structural=structural, restore=restore, help=help or (fn.__doc__ or "").strip(),
                           devices=devices))
        return fn

    return deco


def register_alias(name: str, recipe: str) -> None:
    """A named preset that `Recipe.parse` expands in place (`speed` -> its steps); saved recipes store the steps."""
    STEPS.add_alias(name, tuple(t.strip() for t in recipe.split(",")))


@dataclass(frozen=True)
class Recipe:
    """Comma-joined steps applied left to right; `str(Recipe.parse(s))` round-trips."""

    steps: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("empty recipe")
        for tok in self.steps:
            STEPS.parse(tok)  # validates names and parameters

    @classmethod
    def parse(cls, text: str | Recipe | list[str] | tuple[str, ...]) -> Recipe:
        if isinstance(text, Recipe):
            return text
        toks = [t.strip() for t in text.split(",")] if isinstance(text, str) else [str(t).strip() for t in text]
        if any(not t for t in toks):
            raise ValueError(f"empty step in recipe {text!r}")
        return cls(tuple(t for tok in toks for t in STEPS.expand(tok)))  # presets expand in place

    def specs(self) -> list[tuple[str, StepSpec, Any]]:
        return [(tok, *STEPS.parse(tok)) for tok in self.steps]

    @property
    def needs_calibration(self) -> bool:
        return any(spec.needs_calibration for _, spec, _ in self.specs())

    def __str__(self) -> str:
        return ",".join(self.steps)


def compress_(model: nn.Module, recipe: str | Recipe, calib: Any = None, progress: bool = True) -> list[StepReport]:
    """Apply `recipe` to `model` in place, left to right. Each report's `step` is the explicit token to record.

    `calib`: a `compress.calibration.Calibration`, required when a step needs calibration data.
    """
    rec = Recipe.parse(recipe)
    specs = rec.specs()
    if calib is None and any(spec.needs_calibration for _, spec, _ in specs):
        need = ", ".join(tok for tok, spec, _ in specs if spec.needs_calibration)
        raise ValueError(f"{need} needs calibration data: pass calib=compress.calibration.get_calibration(tokenizer)")
    reports: list[StepReport] = []
    for tok, spec, cfg in specs:
        t0 = time.perf_counter()
        if progress:
            log.info("compress: applying %s", tok)
        with torch.no_grad():
            rep = spec.fn(model, cfg, calib if spec.needs_calibration else None)
        if rep is None:
            rep = StepReport(step=tok)
        rep.step = getattr(cfg, "token", tok)
        rep.seconds = time.perf_counter() - t0
        if not rep.changed:
            rep.notes.append("WARNING: this step changed nothing")
            log.warning("compress: step %s changed nothing (%s)", tok, "; ".join(rep.notes)[:300])
        log.info("compress: %s (%.1fs)", rep.summary(), rep.seconds)
        reports.append(rep)
    model.eval()
    return reports


def check_devices(recipe: str | Recipe | list[str], device: str) -> None:
    """An unsupported recipe/device pair is a clear error (never a silent fallback): names the steps and what runs."""
    rec = Recipe.parse(recipe) if recipe else None
    if rec is None:
        return
    bad = [(tok, spec) for tok, spec, _ in rec.specs() if device not in spec.devices]
    if bad:
        ok = sorted({s.form for s in STEPS.specs() if device in s.devices})
        steps = ", ".join(f"{tok} ({'/'.join(spec.devices)} only)" for tok, spec in bad)
        raise ValueError(f"recipe step {steps} cannot run on {device}; steps for {device}: {', '.join(ok) or 'none'}")


def restore_structure(model: nn.Module, recipe_steps: list[str]) -> None:
    """Rebuild the module structure the saved recipe produced (on a META-device model), in recipe order."""
    for tok in recipe_steps:
        spec, cfg = STEPS.parse(tok)
        if spec.restore is None:
            if spec.structural:
                raise ValueError(f"step {tok!r} changes structure but cannot be restored from a saved model")
            continue
        spec.restore(model, cfg)


# -- module helpers ---------------------------------------------------------------------------------
def iter_linears(model: nn.Module, skip: tuple[str, ...] = ("lm_head",),
                 types: tuple[type[nn.Module], ...] = (nn.Linear,)) -> Iterator[tuple[str, nn.Module]]:
    """(qualified name, module) of every module of `types` (exact type, not subclasses) not under `skip`.

    A name is skipped when any dotted component of it equals, or the full name starts with, a `skip` entry.
    Materialised first, so callers may swap modules while iterating.
    """
    out = []
    for name, mod in model.named_modules():
        if type(mod) not in types:
            continue
        parts = name.split(".")
        if any(s in parts or name.startswith(s) for s in skip):
            continue
        out.append((name, mod))
    yield from out


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted `name` (e.g. `model.layers.3.mlp.up_proj`) by `module`."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, module)
