"""A `torch.compile`d decode step with static shapes (CPU inductor).

Decode shapes change every token (the KV length S) and with the batch size B. To keep the compiled graphs
static, a decode step is padded to *buckets*: B up to the next power of two, S up to the next multiple of
`bucket`. Padded keys point at the cache's scratch slot and are masked out; padded rows write their K/V to
the scratch slot and attend to key 0 only (so they stay finite and never touch a real sequence). One graph
is compiled per (B bucket, S bucket) on first use; inductor's on-disk cache makes later processes reuse the
generated code (`$LLMSPEED_CACHE/inductor`, `$LLMSPEED_CACHE/aoti`).

Two runners execute the per-bucket graphs (`CompileConfig.runner`):
- `aot` (default): AOTInductor, one exported package per bucket (`runtime/aot.py`): a C++ wrapper, no dynamo
  guards; inputs are checked here (the bucket key), the model's state when an engine is built
  (`reuse_or_build`). Packages are cached in `$LLMSPEED_CACHE/aoti`.
- `dynamo`: `torch.compile` of the same function, guarded by dynamo on every call (~2 ms more per step).
  If exporting or AOT-compiling a model fails, the decode step falls back to this runner with a warning.

Prefill stays eager (its shapes vary with the prompt; it is GEMM-bound, where compilation gains little).
Nothing here imports torch._inductor at import time: compilation is configured when the first decode runs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmspeed.layers.attention import AttnBatch
from llmspeed.layers.linear import fused_parts
from llmspeed.layers.quant.plan import PhaseAware
from llmspeed.runtime import aot
from llmspeed.runtime.aot_builds import BackgroundBuilds, bucket_spec
from llmspeed.util.cache import cache_path
from llmspeed.util.progress import heartbeat

log = logging.getLogger(__name__)

MODES = ("default", "max-autotune-no-cudagraphs")
RUNNERS = ("aot", "dynamo")
PROFILE_KERNELS_ENV = "TORCHINDUCTOR_CPP_ENABLE_KERNEL_PROFILE"


@dataclass(frozen=True)
class CompileConfig:
    bucket: int = 128  # KV length padded up to a multiple of this
    mode: str = "default"  # torch.compile mode
    cpp_wrapper: bool = False  # dynamo runner: inductor emits a C++ wrapper instead of Python glue (aot: always)
    max_batch_bucket: int = 32  # larger decode batches run eager
    runner: str = "aot"  # "aot": AOTInductor package per bucket, no guards; "dynamo": torch.compile
    background: bool = False  # aot: a bucket not yet compiled decodes eager while a builder thread compiles it

    def __post_init__(self) -> None:
        if self.bucket <= 0 or self.bucket % 16:
            raise ValueError(f"bucket must be a positive multiple of 16, got {self.bucket}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.max_batch_bucket <= 0:
            raise ValueError("max_batch_bucket must be > 0")
        if self.runner not in RUNNERS:
            raise ValueError(f"runner must be one of {RUNNERS}, got {self.runner!r}")


def cache_dir(kind: str = "inductor") -> Path:
    return cache_path(kind)


SERVE_COMPILE = ("background", "on", "off")


def serving_compile(current: CompileConfig | None, mode: str) -> CompileConfig | None:
    """`llmspeed serve --compile`: `background` (default: eager until each bucket's package is built off the decode
    thread), `on` (a step waits for its bucket's compile, as the recipe's `compile`), `off` (eager)."""
    if mode not in SERVE_COMPILE:
        raise ValueError(f"--compile must be one of {', '.join(SERVE_COMPILE)}, got {mode!r}")
    if mode == "off":
        return None
    return dataclasses.replace(current or CompileConfig(), background=mode == "background")


def _configure_inductor(cfg: CompileConfig) -> None:
    """Persistent compile cache + wrapper choice; called once, right before the first compilation."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_path("inductor")))
    import torch._inductor.config as ic  # heavy: only when compiling

    ic.fx_graph_cache = True
    ic.cpp_wrapper = cfg.cpp_wrapper
    if os.environ.get(PROFILE_KERNELS_ENV) == "1":  # `llmspeed profile`: inductor's C++ kernels visible by name
        ic.cpp.enable_kernel_profile = True
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 256)
    torch._dynamo.config.accumulated_cache_size_limit = max(torch._dynamo.config.accumulated_cache_size_limit, 512)


def _next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _forward(model: nn.Module, ids: torch.Tensor, positions: torch.Tensor, slot_mapping: torch.Tensor,
             gather_idx: torch.Tensor, mask: torch.Tensor, kv: list[tuple[torch.Tensor, torch.Tensor]]
             ) -> torch.Tensor:  # -> [Bb, V]
    meta = AttnBatch(positions=positions, mask=mask, slot_mapping=slot_mapping, gather_idx=gather_idx)
    return model(ids, meta, kv, logits_index=torch.zeros(ids.shape[0], dtype=torch.long))


def _forward_aot(model: nn.Module, ids: torch.Tensor, positions: torch.Tensor, slot_mapping: torch.Tensor,
                 gather_idx: torch.Tensor, *kv: torch.Tensor) -> torch.Tensor:  # -> [Bb, V]
    """The AOT graph: the key mask is computed in the graph from the positions; `kv` is k0, v0, k1, v1, ..."""
    Sb = gather_idx.shape[1]
    mask = (torch.arange(Sb).view(1, Sb) <= positions).view(-1, 1, 1, Sb)  # [Bb, 1, 1, Sb]
    return _forward(model, ids, positions, slot_mapping, gather_idx, mask, list(zip(kv[0::2], kv[1::2], strict=True)))


class CompiledDecode:
    """Callable with the model's signature for decode steps (T == 1); pads to buckets and runs the graph."""

    def __init__(self, model: nn.Module, cfg: CompileConfig, state: int | None = None,
                 worker: dict[str, Any] | None = None) -> None:
        self.model, self.cfg = model, cfg
        self.state = state  # aot runner: aot.model_state(model) the graphs were exported against
        self.runner = cfg.runner  # becomes "dynamo" if the model cannot be exported / AOT-compiled
        self._fn: Callable[..., torch.Tensor] | None = None
        self._seen: set[tuple[int, int]] = set()
        self._aot: dict[tuple[int, int, int], Callable[[list[torch.Tensor]], torch.Tensor]] = {}
        self._kv: tuple[list[Any], list[torch.Tensor], int] | None = None  # (engine's list, graph inputs, layout id)
        self._layouts: dict[tuple[Any, ...], int] = {}
        self._arange: dict[int, torch.Tensor] = {}
        self.worker = worker  # background builds: how a child process rebuilds the model (runtime/aot_builds.py)
        self.builds = BackgroundBuilds(worker) if cfg.background else None

    def _compiled(self) -> Callable[..., torch.Tensor]:
        if self._fn is None:
            _configure_inductor(self.cfg)
            mode = None if self.cfg.mode == "default" else self.cfg.mode
            self._fn = torch.compile(_forward, dynamic=False, mode=mode, fullgraph=False)
        return self._fn

    def supports(self, batch: int) -> bool:
        return batch <= self.cfg.max_batch_bucket

    def __call__(self, ids: torch.Tensor, meta: AttnBatch, kv: list[tuple[torch.Tensor, torch.Tensor]],
                 scratch_slot: int) -> torch.Tensor:  # ids [B, 1] -> logits [B, V]
        if self.runner == "aot":
            return self._run_aot(ids, meta, kv, scratch_slot)
        B = ids.shape[0]
        Bb = _next_pow2(B)
        if meta.kv_range is not None:  # B == 1 contiguous: a range of slots
            s0, S = meta.kv_range
            gather = torch.arange(s0, s0 + S).unsqueeze(0)  # [1, S]
        else:
            assert meta.gather_idx is not None
            gather = meta.gather_idx  # [B, S]
        S = gather.shape[1]
        Sb = -(-S // self.cfg.bucket) * self.cfg.bucket
        pos = meta.positions  # [B, 1]
        g = torch.full((Bb, Sb), scratch_slot, dtype=torch.long)
        g[:B, :S] = gather
        keys = torch.arange(Sb).view(1, Sb)
        p = torch.zeros(Bb, 1, dtype=torch.long)
        p[:B] = pos
        mask = (keys <= p).view(Bb, 1, 1, Sb)  # padded keys beyond each row's position are masked
        i = torch.zeros(Bb, 1, dtype=torch.long)
        i[:B] = ids
        slots = torch.full((Bb,), scratch_slot, dtype=torch.long)
        assert meta.slot_mapping is not None
        slots[:B] = meta.slot_mapping.view(-1)
        return self._run_dynamo((i, p, slots, g, mask), kv)[:B]

    def _run_dynamo(self, inputs: tuple[torch.Tensor, ...], kv: list[tuple[torch.Tensor, torch.Tensor]]
                    ) -> torch.Tensor:  # -> [Bb, V]
        key = (inputs[0].shape[0], inputs[3].shape[1])
        if key in self._seen:
            return self._compiled()(self.model, *inputs, kv)
        with heartbeat(f"decode graph batch {key[0]}, KV length {key[1]} (torch.compile)"):
            logits = self._compiled()(self.model, *inputs, kv)
        self._seen.add(key)
        return logits

    # -- aot runner: few inputs, little Python per step ------------------------------------------------------
    def _pad(self, ids: torch.Tensor, meta: AttnBatch, scratch: int) -> tuple[torch.Tensor, ...]:
        """(ids [Bb, 1], positions [Bb, 1], slots [Bb], gather [Bb, Sb]): padded rows and keys use the scratch slot."""
        B = ids.shape[0]
        Bb = _next_pow2(B)
        pos, slots = meta.positions, meta.slot_mapping
        assert slots is not None
        if meta.kv_range is not None:  # B == 1 contiguous: keys s0 .. s0 + S - 1
            s0, S = meta.kv_range
            Sb = -(-S // self.cfg.bucket) * self.cfg.bucket
            ar = self._arange.get(Sb)
            if ar is None:
                ar = self._arange[Sb] = torch.arange(Sb).view(1, Sb)
            g = ar + s0  # [1, Sb]
            if S < Sb:
                g[:, S:] = scratch
        else:
            assert meta.gather_idx is not None
            g = meta.gather_idx  # [B, S]
            S = g.shape[1]
            Sb = -(-S // self.cfg.bucket) * self.cfg.bucket
            if Sb > S or Bb > B:
                g = F.pad(g, (0, Sb - S, 0, Bb - B), value=scratch)
        if Bb > B:
            ids, pos = F.pad(ids, (0, 0, 0, Bb - B)), F.pad(pos, (0, 0, 0, Bb - B))
            slots = F.pad(slots.view(-1), (0, Bb - B), value=scratch)
        return ids, pos, slots.view(-1), g

    def _state(self, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[list[torch.Tensor], int]:
        """Every layer's k and v as graph inputs and an id of their layout, recomputed only when the engine passes
        another list. (Passing the two pools [L, Hkv, slots, D] instead would save 58 inputs, but export
        functionalizes the in-place write into a per-layer view of a pool as a copy of the whole pool.)"""
        if self._kv is None or self._kv[0] is not kv:
            state = [t for pair in kv for t in pair]
            sig = tuple((tuple(t.shape), t.stride(), t.dtype) for t in state)
            self._kv = (kv, state, self._layouts.setdefault(sig, len(self._layouts)))
        return self._kv[1], self._kv[2]

    def _run_aot(self, ids: torch.Tensor, meta: AttnBatch, kv: list[tuple[torch.Tensor, torch.Tensor]],
                 scratch: int) -> torch.Tensor:  # -> [B, V]
        inputs = self._pad(ids, meta, scratch)
        state, layout = self._state(kv)
        key = (inputs[0].shape[0], inputs[3].shape[1], layout)  # (Bb, Sb, KV layout): fixes every input shape
        run = self._aot.get(key)
        if run is None and self.builds is not None:
            run = self.builds.get(key, lambda: self._export(inputs, state), self._options(), self._what(inputs),
                                  lambda: {**bucket_spec(inputs, state), "compile": dataclasses.asdict(self.cfg)})
            if run is None:  # this bucket is being compiled (or cannot be): the eager step, same kernels
                return self.model(ids, meta, kv, logits_index=torch.zeros(ids.shape[0], dtype=torch.long))
            self._aot[key] = run
        if run is None:
            try:
                run = self._build_aot(inputs, state)
            except Exception as e:  # any export / compile failure: keep decoding, through dynamo
                log.warning("AOT compile of the decode step failed (%s: %s); using torch.compile instead",
                            type(e).__name__, str(e).splitlines()[0] if str(e) else "")
                self.runner = "dynamo"
                return self(ids, meta, kv, scratch)
            self._aot[key] = run
        logits = run([*inputs, *state])  # [Bb, V]
        return logits if logits.shape[0] == ids.shape[0] else logits[: ids.shape[0]]

    def _options(self) -> dict[str, Any]:
        from llmspeed.kernels.aoti import c_shims

        return {"max_autotune": self.cfg.mode != "default",
                "cpp.enable_kernel_profile": os.environ.get(PROFILE_KERNELS_ENV) == "1",
                "aot_inductor.custom_ops_to_c_shims": c_shims()}  # llmspeed's ops called directly, not boxed

    @staticmethod
    def _what(inputs: tuple[torch.Tensor, ...]) -> str:
        return f"decode graph batch {inputs[0].shape[0]}, KV length {inputs[3].shape[1]} (AOTInductor)"

    def _export(self, inputs: tuple[torch.Tensor, ...], state: list[torch.Tensor]) -> tuple[Any, Path]:
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir()))  # AOTInductor's build directories
        return aot.export_and_locate(self.model, _forward_aot, inputs, state, cache_dir("aoti"), self._options(),
                                     self._what(inputs))

    def _build_aot(self, inputs: tuple[torch.Tensor, ...], state: list[torch.Tensor]
                   ) -> Callable[[list[torch.Tensor]], torch.Tensor]:
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir()))  # AOTInductor's build directories
        return aot.build(self.model, _forward_aot, inputs, state, cache_dir("aoti"), self._options(),
                         self._what(inputs))


def prepare_for_compile(model: nn.Module) -> None:
    """Eager checks a compiled graph cannot make (data pointers): drop projection fusions whose Linears were
    replaced, and let each quantized layer do its eager preparation (re-aligned weights, filled caches)."""
    from llmspeed import kernels

    kernels.available()  # build / load llmspeed's C++ kernels now, not inside the traced graph
    for mod in model.modules():
        if isinstance(mod, PhaseAware):
            mod.prepare_for_tracing()
        fused = getattr(mod, "fused", None)
        if fused is None:
            continue
        if isinstance(fused.fused, PhaseAware):
            fused.fused.prepare_for_tracing()
        if not fused.valid(fused_parts(mod)):
            mod.fused = None


def reuse_or_build(model: nn.Module, cfg: CompileConfig, previous: CompiledDecode | None,
                   worker: dict[str, Any] | None = None) -> CompiledDecode:
    """The compiled decode step for `model`: `previous` (and its compiled graphs) when nothing changed, else a new
    one. The AOT runner has no guards, so the model's state (tensors, fusions) is checked here, per engine build.
    `worker`: background builds in a child process that rebuilds the model so (see runtime/aot_builds.py)."""
    prepare_for_compile(model)
    state = aot.model_state(model) if cfg.runner == "aot" else None
    if (previous is None or previous.model is not model or previous.cfg != cfg or previous.state != state
            or previous.worker != worker):
        return CompiledDecode(model, cfg, state, worker)
    return previous
