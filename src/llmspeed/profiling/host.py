"""Per-step host overhead without a profiler: a decode step's wall time minus the time inside the model graph.

The graph is what computes: the AOTInductor package call (`runtime/aot.AotRunner`), the torch.compile'd step
(`CompiledDecode._run_dynamo`) or, uncompiled, the model's forward. Everything else in `Engine.step` — scheduling,
packing inputs, padding to the bucket, sampling, appending tokens, stats — is host overhead. Both clocks run
in a normal step (no profiler hooks inflating either), so the difference is the overhead a user pays; the
profiler-based figure (`ops.py`) also counts kernels it cannot name as overhead.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class HostOverhead:
    steps: int
    step_ms: float  # median decode step, wall
    graph_ms: float  # median time inside the model graph per step
    host_ms: float  # median (step - graph) per step

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _GraphClock:
    """Accumulates wall time spent inside graph calls; nested calls count once."""

    def __init__(self) -> None:
        self.total = 0.0
        self._depth = 0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kw: Any) -> Any:
            if self._depth:
                return fn(*args, **kw)
            self._depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                self.total += time.perf_counter() - t0
                self._depth -= 1
        return timed


@contextlib.contextmanager
def graph_clock(model: Any, decode_fn: Any) -> Iterator[_GraphClock]:
    """Time every graph call of `model` / its compiled decode step while inside the block (restored after)."""
    from llmspeed.runtime import aot
    from llmspeed.runtime.compiled import CompiledDecode

    clock = _GraphClock()
    patched: list[tuple[Any, str, bool, Any]] = []

    def patch(owner: Any, name: str) -> None:  # a class's method or an instance's attribute
        patched.append((owner, name, name in vars(owner), vars(owner).get(name)))
        setattr(owner, name, clock.wrap(getattr(owner, name)))

    patch(aot.AotRunner, "__call__")
    patch(CompiledDecode, "_run_dynamo")
    if getattr(decode_fn, "runner", "") != "dynamo":  # a wrapper on the module would be traced by dynamo
        patch(model, "forward")
    try:
        yield clock
    finally:
        for owner, name, had, original in reversed(patched):
            if had:
                setattr(owner, name, original)
            else:
                delattr(owner, name)  # the instance attribute shadowed the class's method


def measure_host_overhead(llm: Any, prompts: list[str], steps: int) -> HostOverhead:
    """Run `steps` decode steps of a batch of `prompts` (after their prefill) and split each step's wall time."""
    from llmspeed.runtime.sequence import SamplingParams

    eng = llm.engine
    params = SamplingParams(max_new_tokens=steps + 2, temperature=0.0, ignore_eos=True)
    for p in prompts:
        eng.add(eng.make_sequence(llm.tokenizer.encode(p), params))
    eng.step()  # prefill, not timed
    eng.step()  # first decode step (a bucket's first use may load its graph), not timed
    walls: list[float] = []
    graphs: list[float] = []
    with graph_clock(llm.model, eng.decode_fn) as clock:
        while len(walls) < steps and eng.has_work():
            g0 = clock.total
            t0 = time.perf_counter()
            eng.step()
            walls.append(time.perf_counter() - t0)
            graphs.append(clock.total - g0)
    while eng.has_work():
        eng.step()
    hosts = [w - g for w, g in zip(walls, graphs, strict=True)]
    return HostOverhead(steps=len(walls), step_ms=1e3 * statistics.median(walls),
                        graph_ms=1e3 * statistics.median(graphs), host_ms=1e3 * statistics.median(hosts))
