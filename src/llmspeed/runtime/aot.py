"""AOTInductor decode graphs: one exported, ahead-of-time compiled shared library per static input signature.

`torch.compile` pays two costs on every decode step that have nothing to do with the model: dynamo's guards
(~300 lifted parameters, ~0.9 ms) and inductor's Python wrapper that launches ~400 kernels (~1.3 ms). Here a
decode step is exported once per bucket (`torch.export`, non-strict), compiled by AOTInductor into a C++
wrapper + kernels (`.pt2` package, no weights inside) and run through the package loader's `boxed_run`:
no guards, no Python between kernels. llmspeed's custom ops (`torch.ops.llmspeed.*`) are called from the
C++ wrapper through AOTInductor's proxy executor (the dispatcher, as in eager).

- Weights are not copied: the package is built with `package_constants_in_so=False` and the loader is handed
  the model's own tensors (`user_managed`), so the graph reads the live parameters. What the graph depends
  on beyond its inputs (module structure, flags, tensor identity) is not guarded per step: the owner checks
  a model-state signature when an engine is built (`runtime/compiled.py`).
- Inputs are checked by the caller (bucketed shapes are part of the cache key). The KV cache tensors are
  written in place by the graph (export keeps the mutation; inductor writes straight into the input).
- Packages are cached under `$LLMSPEED_CACHE/aoti/<key>.pt2`; the key hashes the exported graph, its input
  metadata, torch's version, the CPU ISA and the inductor options, so a warm process only re-exports
  (seconds) and loads. A cold compile logs a line every 10 s on a non-terminal stderr.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmspeed.util.progress import heartbeat

log = logging.getLogger(__name__)

HEARTBEAT_S = 10.0  # a long compile logs at least this often on a non-terminal stderr


class _Step(nn.Module):
    """The exported callable: `fn(model, *inputs)`."""

    def __init__(self, model: nn.Module, fn: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.m, self._fn = model, fn

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self._fn(self.m, *args)


def export_step(model: nn.Module, fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor],
                state: Sequence[torch.Tensor]) -> Any:
    """Export `fn(model, *inputs, *state)` for these shapes; returns the ExportedProgram. `state` (the KV cache)
    is written in place by the graph; its example tensors are fresh, never touched tensors of the same shapes and
    strides (no copy of a large cache, and no aliasing between the examples)."""
    from torch.export.graph_signature import InputKind

    with torch.inference_mode(False), torch.no_grad():  # the engine decodes under inference mode; export cannot
        example_state = [torch.empty_strided(t.shape, t.stride(), dtype=t.dtype) for t in state]
        example = [t.clone() for t in inputs]
        ep = torch.export.export(_Step(model, fn).eval(), (*example, *example_state), strict=False)
    # tensors held outside nn.Module attributes (e.g. the concatenated weights of fused projections) are
    # lifted as constants, which AOTInductor renames (_tensor_constantN) and cannot be bound by name later;
    # as non-persistent buffers they keep their export names and are bound like parameters
    for spec in ep.graph_signature.input_specs:
        if spec.kind == InputKind.CONSTANT_TENSOR and isinstance(ep.constants.get(spec.target), torch.Tensor):
            spec.kind, spec.persistent = InputKind.BUFFER, False
    return ep


def cache_key(ep: Any, options: dict[str, Any]) -> str:
    """Hash of what the compiled code depends on: graph, input metadata, torch, CPU ISA, inductor options."""
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    h = hashlib.sha256()
    for part in (torch.__version__, str(pick_vec_isa()), repr(sorted(options.items())), ep.graph_module.code):
        h.update(part.encode())
        h.update(b"\0")
    for node in ep.graph.nodes:
        if node.op == "placeholder":
            v = node.meta.get("val")
            meta = (tuple(v.shape), tuple(v.stride()), str(v.dtype)) if isinstance(v, torch.Tensor) else repr(v)
            h.update(f"{node.name}:{meta};".encode())
    for spec in ep.graph_signature.input_specs:
        h.update(f"{spec.kind.name}:{spec.target};".encode())
    return h.hexdigest()[:32]


def compile_package(ep: Any, path: Path, options: dict[str, Any], what: str) -> None:
    """AOTInductor-compile `ep` into the package `path` (written to a temporary name, then renamed)."""
    import torch._inductor

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.pt2")
    try:
        with heartbeat(f"{what}: compiling (cached for later runs)", every=HEARTBEAT_S):
            torch._inductor.aoti_compile_and_package(
                ep, package_path=str(tmp),
                inductor_configs={**options, "aot_inductor.package_constants_in_so": False})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class AotRunner:
    """A loaded package bound to the model's live tensors. Call with the flat input list; returns the output."""

    def __init__(self, path: Path, ep: Any) -> None:
        from torch._inductor.package import load_package

        self.path = path
        self._loader = load_package(str(path)).loader
        live = {**ep.state_dict, **ep.constants}  # export keeps the model's own tensor objects here
        fqns = self._loader.get_constant_fqns()
        missing = [f for f in fqns if f not in live]
        if missing:
            raise RuntimeError(f"AOTInductor package {path.name} needs constants the export lacks: {missing[:3]}")
        self._constants = {f: live[f] for f in fqns}  # referenced here: the loader only stores their pointers
        self._loader.load_constants(self._constants, False, True, True)  # use_inactive, check_full, user_managed

    def __call__(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return self._loader.boxed_run(inputs)[0]


def export_and_locate(model: nn.Module, fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor],
                      state: Sequence[torch.Tensor], root: Path, options: dict[str, Any], what: str
                      ) -> tuple[Any, Path]:
    """Export (on the thread that runs the model: export swaps the module's tensors for fakes while it traces) and
    the package path this graph caches to."""
    t0 = time.perf_counter()
    ep = export_step(model, fn, inputs, state)
    log.info("%s: exported in %.1f s", what, time.perf_counter() - t0)
    return ep, root / f"{cache_key(ep, options)}.pt2"


def load_or_compile(ep: Any, path: Path, options: dict[str, Any], what: str) -> AotRunner:
    """The cached package for `ep`, compiled first when missing or unusable. Reads the model's tensors only, so it
    may run on another thread while the model decodes (`CompileConfig.background`)."""
    t0 = time.perf_counter()
    if not path.exists():
        compile_package(ep, path, options, what)
    try:
        runner = AotRunner(path, ep)
    except RuntimeError as e:  # a damaged or foreign cache entry: compile it again once
        log.warning("%s: cached package %s unusable (%s); recompiling", what, path.name, str(e).splitlines()[0])
        path.unlink(missing_ok=True)
        compile_package(ep, path, options, what)
        runner = AotRunner(path, ep)
    log.info("%s: ready in %.1f s (%s)", what, time.perf_counter() - t0, path.name)
    return runner


def build(model: nn.Module, fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor],
          state: Sequence[torch.Tensor], root: Path, options: dict[str, Any], what: str) -> AotRunner:
    """Export, then load the cached package for this graph or compile it first."""
    ep, path = export_and_locate(model, fn, inputs, state, root, options, what)
    return load_or_compile(ep, path, options, what)


def model_state(model: nn.Module, ignore: tuple[str, ...] = ()) -> int:
    """Signature of what an exported graph depends on besides its inputs: the module tree, each module's plain
    attributes (flags, plans, fusions: by value or identity) and the identity and storage of its tensors.
    Checked when an engine is built, instead of guards on every step. Hook dicts are left out (profiling
    adds hooks for a while; exported graphs never run them), and so are the attributes named in `ignore`."""
    items: list[Any] = []
    for name, mod in model.named_modules():
        attrs = tuple((k, _summary(v)) for k, v in vars(mod).items()
                      if k not in ("_parameters", "_buffers", "_modules", *ignore) and "hook" not in k)
        tensors = tuple((k, _summary(t)) for k, t in (*mod._parameters.items(), *mod._buffers.items()))
        items.append((name, type(mod).__qualname__, attrs, tensors))
    return hash(tuple(items))


def _summary(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if dataclasses.is_dataclass(v) and not isinstance(v, type):  # frozen values (ExecPlan): by value
        return repr(v)
    if isinstance(v, torch.Tensor):
        return id(v), v.data_ptr(), tuple(v.shape), v.dtype
    return type(v).__qualname__, id(v)
