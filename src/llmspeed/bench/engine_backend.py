"""llmspeed's own engine as a bench backend: token ids in, the engine's per-request timings out."""

from __future__ import annotations

import time
from typing import Any

from llmspeed.bench.config import Scenario
from llmspeed.bench.measure import RunResult, path_size


class EngineBackend:
    engine = "llmspeed"

    def __init__(self, spec: str, recipe: str | None = None, tp: int = 1, device: str = "cpu",
                 draft: str | None = None) -> None:
        self.spec = spec
        self.recipe = recipe
        self.tp = tp  # tensor-parallel ranks: this worker is rank 0 (its RSS is rank 0's)
        self.device = device
        self.draft = draft
        self.llm: Any = None

    def load(self) -> None:
        import llmspeed

        self.llm = llmspeed.load(self.spec, recipe=self.recipe, tp=self.tp, device=self.device, draft=self.draft)

    def close(self) -> None:
        """Stop a tensor-parallel group's followers."""
        if self.llm is not None:
            self.llm.close()

    def prepare(self, scenarios: list[Scenario]) -> None:
        """Size the KV cache and batch limits for the largest scenario; no prefix cache (repeats must recompute)."""
        bs = self.llm.engine_config.block_size
        tokens = max(s.batch * (s.prompt_len + s.new_tokens + bs) for s in scenarios)
        self.llm.reset_engine(kv_cache_tokens=max(tokens, 1024), max_batch=max(s.batch for s in scenarios),
                              max_batch_tokens=max(4096, *(s.batch * s.prompt_len for s in scenarios)),
                              enable_prefix_cache=False)

    @property
    def size_bytes(self) -> int:
        if self.spec == "default":
            from llmspeed.models.default_model import default_gguf_path

            return path_size(default_gguf_path())
        return path_size(self.spec)

    def source_name(self) -> str:
        return self.spec

    @property
    def recipe_steps(self) -> list[str]:
        return list(self.llm.recipe)

    def encode(self, text: str) -> list[int]:
        return self.llm.tokenizer.encode(text)

    def bytes_per_step(self, batch: int, context_len: int) -> float:
        from llmspeed.profiling.runner import model_bytes

        w, kv = model_bytes(self.llm, batch, context_len)
        return float(w + kv)

    def run(self, sc: Scenario, new_tokens: int, ids: list[int], text: str = "") -> RunResult:
        from llmspeed.runtime.sequence import SamplingParams

        eng = self.llm.engine
        tok = self.llm.tokenizer
        params = SamplingParams(max_new_tokens=new_tokens, temperature=0.0, ignore_eos=True)
        t0 = time.perf_counter()
        for _ in range(sc.batch):  # t_pre: tokenizing the prompt text (the ids used are the shared exact-length ones)
            tok.encode(text)
        t_pre = (time.perf_counter() - t0) / sc.batch
        seqs = [eng.make_sequence(list(ids), params) for _ in range(sc.batch)]
        eng.run_until_done(seqs)
        for s in seqs:  # t_post: the text is detokenized when read, as a client receiving text reads it
            _ = s.text
        end = time.perf_counter()
        first = min(s.timings.first_token or end for s in seqs)
        tm = seqs[0].timings
        return RunResult(ttft_s=first - t0, e2e_s=end - t0, tokens_per_seq=[len(s.output_ids) for s in seqs],
                         t_decode=max(s.timings.t_decode for s in seqs),
                         stages={"t_pre": t_pre, "t_prefill": tm.t_prefill, "t_decode": tm.t_decode,
                                 "t_post": tm.t_post},
                         spec={"draft_tokens": sum(s.num_draft_tokens for s in seqs),
                               "accepted_tokens": sum(s.num_accepted_tokens for s in seqs),
                               "verifies": sum(s.num_verifies for s in seqs)} if self.draft else {})

    def quality(self, max_tokens: int) -> dict[str, Any]:
        try:
            from llmspeed.evaluation.api import evaluate
        except ImportError as e:
            return {"status": "skipped", "note": f"llmspeed.evaluate unavailable ({e})"}
        try:
            res = evaluate(self.llm, baseline=None, max_tokens=max_tokens)
        except TypeError:
            res = evaluate(self.llm, baseline=None)
        return {"status": "ok", **{k: v for k, v in dict(res).items() if isinstance(v, (int, float, str))}}
