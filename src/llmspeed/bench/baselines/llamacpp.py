"""Baseline: llama.cpp through llama-cpp-python on the GGUF file (optional extra `llmspeed[llamacpp]`)."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

from llmspeed.bench.config import Scenario
from llmspeed.bench.measure import RunResult, path_size

INSTALL_HINT = "skipped: pip install 'llmspeed[llamacpp]'"


def available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def gguf_for(spec: str) -> Path | None:
    from llmspeed.bench.baselines.hf import original_weights

    found = original_weights(spec)
    return found[1] if found and found[0] == "gguf" else None


class LlamaCppBackend:
    engine = "llamacpp"

    def __init__(self, spec: str, n_ctx: int = 2048) -> None:
        path = gguf_for(spec)
        if path is None:
            raise ValueError(f"llama.cpp baseline needs a GGUF file; {spec} has none")
        self.path = path
        self.n_ctx = n_ctx
        self.llm: Any = None

    def load(self) -> None:
        from llama_cpp import Llama

        from llmspeed.runtime.threads import physical_cores

        self.llm = Llama(model_path=str(self.path), n_ctx=self.n_ctx, n_threads=physical_cores(),
                         n_threads_batch=physical_cores(), n_batch=512, verbose=False)

    @property
    def size_bytes(self) -> int:
        return path_size(self.path)

    def source_name(self) -> str:
        return str(self.path)

    def encode(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def bytes_per_step(self, batch: int, context_len: int) -> float:
        return float(self.size_bytes)  # quantized weights as stored (KV in f16 is small next to them here)

    def run(self, sc: Scenario, new_tokens: int, ids: list[int]) -> RunResult:
        """One request at a time (the high-level API does not batch): batch B runs B requests back to back."""
        ttft = None
        counts = []
        t0 = time.perf_counter()
        for _ in range(sc.batch):
            self.llm.reset()
            n = 0
            stream = self.llm.generate(ids, temp=0.0, top_k=1, reset=True)
            for _tok in stream:
                if ttft is None:
                    ttft = time.perf_counter() - t0
                n += 1
                if n >= new_tokens:
                    break
            counts.append(n)
        e2e = time.perf_counter() - t0
        return RunResult(ttft_s=ttft or e2e, e2e_s=e2e, tokens_per_seq=counts)
