"""Per-step decode overhead of the compiled-decode runners, measured so that a shared machine does not blur it.

One decode step of a real engine (default model, `--recipe`, a `--prompt-len` prompt plus a few generated tokens)
is repeated through: the eager model call, the `dynamo` runner (torch.compile) and the `aot` runner
(AOTInductor). Each step is timed on the calling thread's CPU clock (`time.thread_time`: with one torch thread
all kernels run on it, and time the OS gives other processes is not counted), median of `--repeats` blocks.

The floor is the same step's llmspeed kernels (every `torch.ops.llmspeed.*` call of one eager step, captured
with a dispatch mode and replayed back to back on the same clock) plus inductor's fused elementwise kernels
(their profiler self time in the aot step, median of 3 profiled blocks). Overhead = step − floor: everything
that is not a kernel (Python, guards, wrapper, allocation, argument handling).

    python benchmarks/decode_overhead.py --recipe int8-head,int4-g32-asym,compile --repeats 7
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def cpu_ms_per_call(fn: Callable[[], object], calls: int, repeats: int) -> float:
    fn()
    blocks = []
    for _ in range(repeats):
        t0 = time.thread_time()
        for _ in range(calls):
            fn()
        blocks.append((time.thread_time() - t0) / calls * 1e3)
    return statistics.median(blocks)


class _Capture(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        if func.namespace == "llmspeed":
            self.calls.append((func, args, kwargs or {}))
        return func(*args, **(kwargs or {}))


def fused_kernel_ms(step: Callable[[], object], steps: int = 8) -> float:
    """Profiler self time of inductor's generated C++ kernels per step (median of 3 blocks)."""
    from torch.profiler import ProfilerActivity, profile

    out = []
    for _ in range(3):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
        us = sum(e.self_cpu_time_total for e in prof.events() if "cpp_fused" in e.name)
        out.append(us / steps / 1e3)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--recipe", default="int8-head,int4-g32-asym,compile")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--calls", type=int, default=20, help="steps per timed block")
    ap.add_argument("--repeats", type=int, default=7, help="timed blocks (median reported)")
    args = ap.parse_args()

    import os

    os.environ.setdefault("TORCHINDUCTOR_CPP_ENABLE_KERNEL_PROFILE", "1")  # inductor kernels named in the profiler
    from _common import shakespeare_ids

    import llmspeed
    from llmspeed.compress.api import compress_
    from llmspeed.runtime.compiled import ATTR, decode_fn_for
    from llmspeed.runtime.sequence import SamplingParams

    llm = llmspeed.load(args.model, threads=1)
    compress_(llm, args.recipe)
    cfg = getattr(llm.model, ATTR)
    eng = llm.engine
    ids = shakespeare_ids(llm.tokenizer, args.prompt_len + args.batch)
    for b in range(args.batch):
        eng.add(eng.make_sequence(ids[b:b + args.prompt_len], SamplingParams(max_new_tokens=64, ignore_eos=True)))
    for _ in range(5):  # prefill + a few decode steps
        eng.step()
    batch = eng.schedule()
    step_ids, meta, last = eng.build_inputs(batch.seqs)
    kv = eng.kv

    def eager() -> torch.Tensor:
        return llm.model(step_ids, meta, kv.layers, logits_index=last)

    rows: dict[str, float] = {}
    with torch.inference_mode():
        cap = _Capture()
        if meta.kv_range is not None:  # the compiled step reads K/V through the paged kernel; capture that one
            s0, S = meta.kv_range
            paged = dataclasses.replace(meta, kv_range=None, gather_idx=torch.arange(s0, s0 + S).unsqueeze(0))
        else:
            paged = meta
        with cap:
            llm.model(step_ids, paged, kv.layers, logits_index=last)
        calls = cap.calls

        def kernels() -> None:
            for op, a, k in calls:
                op(*a, **k)

        runners: dict[str, Callable[[], object]] = {"eager": eager}
        for name in ("dynamo", "aot"):
            setattr(llm.model, ATTR, dataclasses.replace(cfg, runner=name))
            fn = decode_fn_for(llm.model)
            runners[name] = (lambda f: lambda: f(step_ids, meta, kv.layers, kv.scratch_slot))(fn)
        for fn in runners.values():
            fn()  # compile / load outside the timing
        for _ in range(2):  # interleave so slow phases of the machine hit every runner alike
            for name, fn in [*runners.items(), ("llmspeed kernels", kernels)]:
                rows.setdefault(name, [])  # type: ignore[arg-type]
                rows[name].append(cpu_ms_per_call(fn, args.calls, args.repeats))  # type: ignore[attr-defined]
        fused = fused_kernel_ms(runners["aot"])
    med = {k: statistics.median(v) for k, v in rows.items()}  # type: ignore[arg-type]
    floor = med["llmspeed kernels"] + fused
    print(f"batch {args.batch}, KV length {int(meta.positions.max()) + 1}, recipe {args.recipe}, 1 thread, "
          f"CPU ms per step (median of {2 * args.repeats} blocks of {args.calls})")
    print(f"  floor: llmspeed kernels {med['llmspeed kernels']:.3f} ({len(calls)} calls) + inductor fused "
          f"kernels {fused:.3f} = {floor:.3f}")
    for name in runners:
        print(f"  {name:7s} step {med[name]:7.3f}  overhead {med[name] - floor:6.3f}")


if __name__ == "__main__":
    main()
