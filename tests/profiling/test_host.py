"""Host overhead without a profiler: graph time is counted once per call, the split adds up, patches are undone."""

from __future__ import annotations

import time

from llmspeed.profiling.host import _GraphClock, graph_clock, measure_host_overhead
from llmspeed.runtime import aot
from llmspeed.runtime.compiled import CompiledDecode


def test_nested_graph_calls_count_once() -> None:
    clock = _GraphClock()

    def inner() -> None:
        time.sleep(0.02)

    wrapped_inner = clock.wrap(inner)
    clock.wrap(lambda: (wrapped_inner(), time.sleep(0.02)))()
    assert 0.035 < clock.total < 0.5  # the outer call's 40 ms, not 60


def test_host_overhead_split_on_the_engine(tiny_llm) -> None:
    call, run_dynamo = aot.AotRunner.__call__, CompiledDecode._run_dynamo
    h = measure_host_overhead(tiny_llm, ["hello world, a prompt"], 12)
    assert h.steps == 12
    assert h.graph_ms > 0 and h.host_ms > 0  # the eager forward is the graph; the engine's Python the rest
    assert h.graph_ms + h.host_ms <= 3 * h.step_ms  # medians of a split, not of unrelated things
    assert "forward" not in vars(tiny_llm.model)  # the instance wrapper is gone
    assert aot.AotRunner.__call__ is call and CompiledDecode._run_dynamo is run_dynamo
    assert not tiny_llm.engine.has_work()


def test_graph_clock_sees_the_forward(tiny_llm) -> None:
    with graph_clock(tiny_llm.model, None) as clock:
        tiny_llm.generate(["a b c"], max_new_tokens=3)
    assert clock.total > 0
