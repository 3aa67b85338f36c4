"""A `torch.compile`d decode step with static shapes (CPU inductor).

Decode shapes change every token (the KV length S) and with the batch size B. To keep the compiled graphs
static, a decode step is padded to *buckets*: B up to the next power of two, S up to the next multiple of
`bucket`. Padded keys point at the cache's scratch slot and are masked out; padded rows write their K/V to
the scratch slot and attend to key 0 only (so they stay finite and never touch a real sequence). One graph
is compiled per (B bucket, S bucket) on first use; inductor's on-disk cache makes later processes reuse the
generated code (`$LLMSPEED_CACHE/inductor`).

Prefill stays eager (its shapes vary with the prompt; it is GEMM-bound, where compilation gains little).
Nothing here imports torch._inductor at import time: compilation is configured when the first decode runs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from llmspeed.layers.attention import AttnBatch
from llmspeed.layers.quant.plan import PhaseAware
from llmspeed.util.cache import cache_path

log = logging.getLogger(__name__)

MODES = ("default", "max-autotune-no-cudagraphs")
PROFILE_KERNELS_ENV = "TORCHINDUCTOR_CPP_ENABLE_KERNEL_PROFILE"


@dataclass(frozen=True)
class CompileConfig:
    bucket: int = 128  # KV length padded up to a multiple of this
    mode: str = "default"  # torch.compile mode
    cpp_wrapper: bool = False  # inductor emits a C++ wrapper instead of Python glue
    max_batch_bucket: int = 32  # larger decode batches run eager

    def __post_init__(self) -> None:
        if self.bucket <= 0 or self.bucket % 16:
            raise ValueError(f"bucket must be a positive multiple of 16, got {self.bucket}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.max_batch_bucket <= 0:
            raise ValueError("max_batch_bucket must be > 0")


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


class CompiledDecode:
    """Callable with the model's signature for decode steps (T == 1); pads to buckets and runs the graph."""

    def __init__(self, model: nn.Module, cfg: CompileConfig) -> None:
        self.model, self.cfg = model, cfg
        self._fn: Callable[..., torch.Tensor] | None = None
        self._seen: set[tuple[int, int]] = set()

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
        key = (Bb, Sb)
        t0 = time.perf_counter()
        logits = self._compiled()(self.model, i, p, slots, g, mask, kv)
        if key not in self._seen:
            self._seen.add(key)
            log.info("compiled decode graph for batch %d, KV length %d in %.1f s", Bb, Sb, time.perf_counter() - t0)
        return logits[:B]


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
        mods = tuple(getattr(mod, n) for n in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj") if hasattr(mod, n))
        if not fused.valid(mods):
            mod.fused = None
