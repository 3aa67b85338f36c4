"""Hot ops from torch.profiler, grouped by module (attention, MLP, norm, lm_head, sampling, other), and the
per-step overhead: decode step wall time minus the profiler's self time of the compute kernels.

Module scopes come from forward hooks that open `record_function` ranges; sampling is scoped by wrapping the
engine's sampler for the duration of the profile (restored afterwards).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from torch.autograd.profiler import record_function

log = logging.getLogger(__name__)
SCOPE = "llmspeed.module::"  # record_function scopes (not "llmspeed::", the namespace of our kernels)
GROUPS = ("attention", "mlp", "norm", "lm_head", "sampling", "other")
# compute kernels: matmuls, attention, softmax, norms, elementwise math (not copies, indexing, allocation);
# llmspeed's own kernels; inductor's generated C++ kernels (named when `llmspeed profile` compiles the graph)
COMPUTE_OPS = re.compile(
    r"^aten::(mm|addmm|bmm|baddbmm|matmul|linear|_weight_int\w+|_int_mm|_scaled_dot_product\w*|_?softmax|"
    r"_?log_softmax|rms_norm|_fused_rms_norm|native_layer_norm|layer_norm|mul_?|add_?|sub_?|div_?|silu_?|"
    r"gelu_?|tanh_?|rsqrt_?|sqrt_?|pow_?|mean|sum|exp_?|neg|sigmoid_?|masked_fill_?|where|argmax|max)$"
    r"|^quantized::|^llmspeed::|^(graph_\d+_)?cpp_fused_")


def _group_of(mod_name: str, mod: nn.Module) -> str | None:
    cls = type(mod).__name__.lower()
    leaf = mod_name.rsplit(".", 1)[-1]
    if leaf == "lm_head":
        return "lm_head"
    if "attn" in leaf or "attention" in cls:
        return "attention"
    if leaf == "mlp" or "mlp" in cls:
        return "mlp"
    if "norm" in cls or leaf.startswith("ln"):
        return "norm"
    return None


@contextlib.contextmanager
def module_scopes(model: nn.Module) -> Iterator[None]:
    """Open a `llmspeed::<group>` profiler range around each attention / MLP / norm / lm_head forward."""
    handles = []
    stack: list[Any] = []

    def pre(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _a: Any) -> None:
            rf = record_function(SCOPE + name)
            rf.__enter__()
            stack.append(rf)
        return hook

    def post(_m: nn.Module, _a: Any, _o: Any) -> None:
        if stack:
            stack.pop().__exit__(None, None, None)

    for name, mod in model.named_modules():
        group = _group_of(name, mod)
        if group is not None:
            handles += [mod.register_forward_pre_hook(pre(group)), mod.register_forward_hook(post)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def sampler_scope() -> Iterator[None]:
    import llmspeed.runtime.model_runner as runner_mod

    original = runner_mod.sample_batch

    def scoped(*args: Any, **kw: Any) -> list[int]:
        with record_function(SCOPE + "sampling"):
            return original(*args, **kw)

    runner_mod.sample_batch = scoped
    try:
        yield
    finally:
        runner_mod.sample_batch = original


@dataclass
class OpsProfile:
    steps: int
    top_ops: list[dict[str, Any]] = field(default_factory=list)  # name, group, self_ms_per_step, calls
    groups_ms_per_step: dict[str, float] = field(default_factory=dict)
    compute_ms_per_step: float = 0.0  # profiler self time of compute kernels per step
    profiled_step_ms: float = 0.0  # step wall time while profiling (inflated by the profiler)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _scope_of(evt: Any) -> str:
    p = evt.cpu_parent
    while p is not None:
        if p.name.startswith(SCOPE):
            return p.name[len(SCOPE):]
        p = p.cpu_parent
    return "other"


def summarize(events: Any, steps: int, top: int = 15) -> OpsProfile:
    """Self CPU time of every aten op grouped by enclosing module scope, per step."""
    by_op: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    groups = dict.fromkeys(GROUPS, 0.0)
    compute_us = 0.0
    for evt in events:
        if evt.name.startswith(SCOPE) or evt.name.startswith("ProfilerStep"):
            continue
        self_us = float(evt.self_cpu_time_total)
        group = _scope_of(evt)
        groups[group] = groups.get(group, 0.0) + self_us
        acc = by_op[(evt.name, group)]
        acc[0] += self_us
        acc[1] += 1
        if COMPUTE_OPS.match(evt.name):
            compute_us += self_us
    n = max(steps, 1)
    ranked = sorted(by_op.items(), key=lambda kv: -kv[1][0])[:top]
    top_ops = [{"name": name, "group": g, "self_ms_per_step": us / n / 1e3, "calls_per_step": calls / n,
                "compute": bool(COMPUTE_OPS.match(name))} for (name, g), (us, calls) in ranked]
    return OpsProfile(steps=steps, top_ops=top_ops, groups_ms_per_step={g: us / n / 1e3 for g, us in groups.items()},
                      compute_ms_per_step=compute_us / n / 1e3)


def profile_decode_steps(llm: Any, prompts: list[str], steps: int, trace_path: str | None = None) -> OpsProfile:
    """Profile `steps` decode steps of a running batch (prefill excluded) with torch.profiler."""
    import time

    from torch.profiler import ProfilerActivity, profile

    from llmspeed.runtime.sequence import SamplingParams

    eng = llm.engine
    params = SamplingParams(max_new_tokens=steps + 2, temperature=0.0, ignore_eos=True)
    seqs = [eng.make_sequence(llm.tokenizer.encode(p), params) for p in prompts]
    for s in seqs:
        eng.add(s)
    eng.step()  # prefill, not profiled
    with module_scopes(llm.model), sampler_scope(), profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        done = 0
        while done < steps and eng.has_work():
            eng.step()
            done += 1
        wall = time.perf_counter() - t0
    while eng.has_work():  # finish the requests so the engine is clean for the next caller
        eng.step()
    if trace_path:
        prof.export_chrome_trace(str(trace_path))
        log.info("chrome trace written to %s", trace_path)
    out = summarize(prof.events(), done)
    out.profiled_step_ms = wall / max(done, 1) * 1e3
    return out
