"""Repro: llmspeed's int4 kernels run slower when called from a non-main thread (the server's engine thread).

    .venv/bin/python benchmarks/engine_thread.py

Times three layers of the default model (int4 q_proj, int4 down_proj, the int8-per-32 head) at M=1, first on the main
thread, then on a new thread, in one process. Measured on an AMD EPYC (Zen 4, 2 vCPUs, avx512_vnni), quiet machine:
q_proj 36.5 -> 60.6 us, down 67.0 -> 135.4 us, head 1242 -> 1311 us; a plain torch linear is unaffected (90 -> 84 us).
This is why `llmspeed serve` decoded at ~41 ms a token while the same engine in-process took ~22 ms.
Cause: libgomp's throttled spinning once the process has more OpenMP workers than CPUs (runtime/threads.py). The
third run hands the main thread's workers back first (`release_openmp_workers`, what the server's EngineLoop does):
measured q_proj 37.5 us main, 37.3 us on the new thread after the release.
"""

from __future__ import annotations

import threading
import time

import torch

import llmspeed
from llmspeed.runtime.threads import release_openmp_workers


def main() -> None:
    llm = llmspeed.load()
    layer = llm.model.model.layers[0]
    down = layer.mlp.down_proj
    cases = [("q_proj", layer.self_attn.q_proj, torch.randn(1, layer.self_attn.q_proj.in_features)),
             ("down_proj", down, torch.randn(1, down.in_features)),
             ("lm_head", llm.model.lm_head, torch.randn(1, llm.model.lm_head.in_features))]

    def run(tag: str) -> None:
        with torch.inference_mode():
            for name, mod, x in cases:
                for _ in range(50):
                    mod(x)
                t = time.perf_counter()
                for _ in range(500):
                    mod(x)
                print(f"{tag:34s} {name:9s} {(time.perf_counter() - t) / 500 * 1e6:8.1f} us", flush=True)

    run("main")
    for tag, release in (("thread", False), ("thread, main's workers released", True)):
        if release:
            release_openmp_workers()
        th = threading.Thread(target=run, args=(tag,))
        th.start()
        th.join()


if __name__ == "__main__":
    main()
