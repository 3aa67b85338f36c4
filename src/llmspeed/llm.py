"""`LLM`: a loaded model + tokenizer + the engine; what `llmspeed.load` returns. The one composer.

It wires the layers together and is the only place that knows all of them: it hands compress's
`restore_structure` to the model loader, turns the recipe's run-time tokens (`a8`, `compile`) and the user's
overrides into the runtime's `RuntimeOptions`, and keeps one compiled decode step across engines.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmspeed.models.config import ModelConfig
from llmspeed.models.tokenizer import Tokenizer
from llmspeed.runtime.compiled import CompileConfig, CompiledDecode, reuse_or_build
from llmspeed.runtime.engine import Engine, EngineConfig
from llmspeed.runtime.options import RuntimeOptions
from llmspeed.runtime.plans import prepare_model
from llmspeed.runtime.sequence import SamplingParams, Sequence
from llmspeed.runtime.spec.config import DraftConfig, parse_draft

PREFILL_ENV = "LLMSPEED_PREFILL"  # `llmspeed --prefill-path` sets it for the process and its workers

log = logging.getLogger(__name__)


@dataclass
class GenerationOutput:
    text: str
    token_ids: list[int]
    prompt_token_ids: list[int]
    finish_reason: str | None
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "token_ids": self.token_ids, "prompt_tokens": len(self.prompt_token_ids),
                "completion_tokens": len(self.token_ids), "finish_reason": self.finish_reason,
                "timings": self.timings}


def runtime_options(recipe: list[str], prefill: str | None = None) -> RuntimeOptions:
    """The recipe's run-time tokens (`a8`, `compile...`) and the prefill override as RuntimeOptions.

    `prefill=None` reads $LLMSPEED_PREFILL (default `auto`: measured per machine).
    """
    from llmspeed.compress.api import Recipe
    from llmspeed.compress.compile_step import CompileStepConfig
    from llmspeed.compress.quant.act8 import Act8Config

    cfgs = [cfg for _, _, cfg in Recipe.parse(recipe).specs()] if recipe else []
    comp = [c for c in cfgs if isinstance(c, CompileStepConfig)]
    compile_cfg = None
    if comp:
        compile_cfg = CompileConfig(bucket=comp[-1].bucket, mode=comp[-1].mode, cpp_wrapper=comp[-1].cpp_wrapper)
    if prefill is None:
        prefill = os.environ.get(PREFILL_ENV, "").strip().lower() or "auto"
    return RuntimeOptions(act_q8=any(isinstance(c, Act8Config) for c in cfgs), compile=compile_cfg, prefill=prefill)


class LLM:
    def __init__(self, model: nn.Module, tokenizer: Tokenizer, recipe: list[str] | None = None,
                 source: str = "", engine_config: EngineConfig | None = None, prefill: str | None = None,
                 draft: str | DraftConfig | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.recipe: list[str] = list(recipe or [])
        self.source = source
        self.engine_config = engine_config or EngineConfig()
        self._prefill = prefill
        self.options = runtime_options(self.recipe, prefill)
        self._engine: Engine | None = None
        self._decode: CompiledDecode | None = None  # kept across engines: a rebuilt engine does not recompile
        self.last_output: GenerationOutput | None = None
        self.tp: Any = None  # runtime.tp_launch.Launched when this LLM is rank 0 of a tensor-parallel group
        self.load_args: dict[str, Any] | None = None  # how `load` made it, while unchanged (data-parallel workers)
        self.draft: DraftConfig | None = None
        self.draft_model: nn.Module | None = None
        prepare_model(model, self.options)  # logits() and the engine then run the same kernels
        self.set_draft(draft)

    @property
    def config(self) -> ModelConfig:
        return self.model.config  # type: ignore[return-value]

    @property
    def device(self) -> torch.device:
        from llmspeed.runtime.device import model_device

        return model_device(self.model)

    def to_device(self, device: torch.device) -> LLM:
        """Move the weights to `device` (the engine, its KV cache and the fused projections are rebuilt there)."""
        from llmspeed.compress.api import check_devices

        check_devices(self.recipe, device.type)
        self.model.to(device)
        if hasattr(self.model, "tie_weights"):
            self.model.tie_weights()
        self._engine = None
        self._decode = None
        prepare_model(self.model, self.options)
        return self

    @property
    def dtype(self) -> torch.dtype:
        return next(p.dtype for p in self.model.parameters() if p.is_floating_point())

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            comp = self.options.compile
            from llmspeed.compile_worker import worker_for

            worker = worker_for(self) if comp is not None and comp.background else None
            self._decode = None if comp is None else reuse_or_build(self.model, comp, self._decode, worker)
            self._engine = Engine(self.model, self.tokenizer, self.engine_config, self.options, self._decode,
                                  draft=self.draft, draft_model=self.draft_model)
        return self._engine

    def set_draft(self, draft: str | DraftConfig | None, dtype: str | torch.dtype | None = None) -> None:
        """Speculative decoding from now on: `ngram[:k]` (prompt lookup), a draft model directory (`DIR[:k]`, any
        --model value sharing this model's tokenizer), or None (off). Greedy output is unchanged by it."""
        cfg = parse_draft(draft)
        model = None
        if cfg is not None and cfg.kind == "model":
            if self.draft is not None and self.draft.path == cfg.path and self.draft_model is not None:
                model = self.draft_model
            else:
                model = _load_draft_model(cfg.path, dtype or self.dtype, self)
        self.draft, self.draft_model = cfg, model
        self._engine = None

    def reset_engine(self, **changes: Any) -> Engine:
        """Rebuild the engine (e.g. after compression changed the model, or for a larger KV cache)."""
        self.engine_config = dataclasses.replace(self.engine_config, **changes)
        self._engine = None
        return self.engine

    def set_compile(self, cfg: CompileConfig | None) -> None:
        """Compiled decode from the next engine on (None: eager), e.g. `CompileConfig(background=True)`."""
        self.options = dataclasses.replace(self.options, compile=cfg)
        self._engine = None

    def close(self) -> None:
        """Stop a tensor-parallel group's followers (idempotent; a no-op for one process)."""
        if self.tp is not None:
            launched, self.tp = self.tp, None
            try:
                self.model.close()  # type: ignore[operator]
            finally:
                launched.shutdown()

    def _no_tp(self, what: str) -> None:
        if self.tp is not None:
            raise ValueError(f"{what} is not supported under --tp: each rank holds only its shard")

    def compress_(self, recipe: Any, calib: Any = None, progress: bool = True) -> list[Any]:
        """Apply a recipe (string or `Recipe`) to this model in place; record its explicit steps; rebuild the engine.

        Steps that need calibration data get the calibration plays through this model's tokenizer unless `calib`
        is given. Returns one `StepReport` per step.
        """
        self._no_tp("compression")
        from llmspeed.compress.api import Recipe, check_devices, compress_
        from llmspeed.compress.calibration import get_calibration

        rec = Recipe.parse(recipe)
        if calib is None and rec.needs_calibration:
            calib = get_calibration(self.tokenizer, max_len=self.config.max_position)
        if self.device.type != "cpu":
            check_devices(rec, self.device.type)
        reports = compress_(self.model, rec, calib, progress)
        self.load_args = None  # changed since loading: a worker must read a saved copy
        self.recipe.extend(rep.step for rep in reports)
        self.options = runtime_options(self.recipe, self._prefill)
        self._engine = None
        self._decode = None  # graphs were built for the model before these steps
        prepare_model(self.model, self.options)
        return reports

    # -- text in, text out ------------------------------------------------------------------------
    def _prepare(self, prompt: str, chat: bool) -> list[int]:
        if not isinstance(prompt, str) or not prompt:
            raise ValueError("prompt is empty")
        if chat:
            prompt = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}])
        return self.tokenizer.encode(prompt)

    def _params(self, max_new_tokens: int, temperature: float, top_k: int, top_p: float, seed: int | None,
                stop: list[str] | tuple[str, ...] | None, ignore_eos: bool) -> SamplingParams:
        return SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                              seed=seed, stop=tuple(stop or ()), ignore_eos=ignore_eos)

    def _ensure_capacity(self, seqs: list[Sequence]) -> None:
        """Grow the KV cache only when one request alone cannot fit; the scheduler queues/preempts the rest."""
        need = max(len(s.prompt_ids) + s.params.max_new_tokens + self.engine_config.block_size for s in seqs)
        eng = self.engine
        if need > eng.kv.capacity_tokens and not eng.has_work():
            self.reset_engine(kv_cache_tokens=need)

    def generate(self, prompts: str | list[str], max_new_tokens: int = 64, *, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
                 stop: list[str] | None = None, ignore_eos: bool = False, chat: bool = False) -> list[GenerationOutput]:
        """Generate for a batch of prompts together (continuous batching over one KV cache)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts:
            raise ValueError("no prompts given")
        params = self._params(max_new_tokens, temperature, top_k, top_p, seed, stop, ignore_eos)
        eng = self.engine  # built before the clock starts: allocation is not part of a request
        t0 = time.perf_counter()
        encoded = [self._prepare(p, chat) for p in prompts]
        t_pre = (time.perf_counter() - t0) / len(prompts)
        seqs = [eng.make_sequence(ids, params) for ids in encoded]
        self._ensure_capacity(seqs)
        self.engine.run_until_done(seqs)
        outs = [self._output(s, t_pre, t0) for s in seqs]
        self.last_output = outs[-1]
        return outs

    def generate_tokens(self, prompt_token_ids: list[list[int]], max_new_tokens: int = 64, *,
                        temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
                        stop: list[str] | None = None, ignore_eos: bool = False) -> list[GenerationOutput]:
        """Like `generate`, from token ids (benchmarks feed every engine the same tokens)."""
        params = self._params(max_new_tokens, temperature, top_k, top_p, seed, stop, ignore_eos)
        eng = self.engine
        t0 = time.perf_counter()
        seqs = [eng.make_sequence(list(ids), params) for ids in prompt_token_ids]
        self._ensure_capacity(seqs)
        self.engine.run_until_done(seqs)
        return [self._output(s, 0.0, t0) for s in seqs]

    def stream(self, prompt: str, max_new_tokens: int = 64, *, temperature: float = 0.0, top_k: int = 0,
               top_p: float = 1.0, seed: int | None = None, stop: list[str] | None = None,
               ignore_eos: bool = False, chat: bool = False) -> Iterator[str]:
        """Yield text pieces as they are generated (whole UTF-8 characters only)."""
        params = self._params(max_new_tokens, temperature, top_k, top_p, seed, stop, ignore_eos)
        eng = self.engine
        t0 = time.perf_counter()
        ids = self._prepare(prompt, chat)
        t_pre = time.perf_counter() - t0
        seq = eng.make_sequence(ids, params)
        self._ensure_capacity([seq])
        eng = self.engine
        eng.add(seq)
        try:
            while not seq.finished:
                eng.step()
                piece = seq.pop_text()
                if piece:
                    yield piece
            rest = seq.pop_text()
            if rest:
                yield rest
        finally:
            if not seq.finished:  # consumer stopped early: free the request's blocks
                eng.abort(seq.seq_id)
                eng.step()
        self.last_output = self._output(seq, t_pre, t0)

    def _output(self, s: Sequence, t_pre: float, t0: float) -> GenerationOutput:
        text = s.text  # detokenized here (on demand), so t_post below includes it
        tm = s.timings
        timings = {"t_pre": t_pre, "t_prefill": tm.t_prefill, "t_decode": tm.t_decode, "t_post": tm.t_post,
                   "ttft": tm.ttft or 0.0, "wall": (tm.finished or time.perf_counter()) - t0,
                   "cached_prompt_tokens": float(s.num_cached_prompt)}
        if s.num_verifies:
            timings.update(spec_draft_tokens=float(s.num_draft_tokens), spec_accepted_tokens=float(s.num_accepted_tokens),
                           spec_verifies=float(s.num_verifies))
        return GenerationOutput(text=text, token_ids=list(s.output_ids), prompt_token_ids=list(s.prompt_ids),
                                finish_reason=s.finish_reason, timings=timings)

    # -- tensors ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, T] int64 -> [B, T, vocab] float32; full causal recompute, no KV cache."""
        from llmspeed.layers.attention import AttnBatch

        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
        B, T = input_ids.shape
        if T > self.config.max_position:
            raise ValueError(f"input has {T} tokens; the context window is {self.config.max_position}")
        dev = self.device
        return self.model(input_ids.long().to(dev), AttnBatch.no_cache(B, T, device=dev))  # on the model's device

    def save(self, out_dir: str | Path) -> Path:
        """safetensors + config.json + recipe.json + tokenizer; written to a temp dir, renamed at the end."""
        self._no_tp("saving")
        from llmspeed.models.saved import write_saved_dir
        from llmspeed.util.atomic import write_dir_atomically

        return write_dir_atomically(Path(out_dir), lambda tmp: write_saved_dir(
            tmp, self.config, self.model.state_dict(), self.tokenizer, self.recipe, source={"model": self.source}))


def _load_draft_model(path: str, dtype: str | torch.dtype, target: LLM) -> nn.Module:
    """Load a draft model and check it speaks the target's tokens (same vocabulary, same token ids)."""
    from llmspeed.compress.api import restore_structure
    from llmspeed.models.loading import load_model

    loaded = load_model(path, dtype, restore=restore_structure)
    a, b = loaded.tokenizer.tok.get_vocab(with_added_tokens=True), target.tokenizer.tok.get_vocab(with_added_tokens=True)
    dv, tv = loaded.model.config.vocab_size, target.config.vocab_size  # type: ignore[union-attr]
    if a != b or dv != tv:
        raise ValueError(f"draft model {path} has another tokenizer or vocabulary than the target "
                         f"({len(a)} tokens / {dv} logits vs {len(b)} / {tv}): a draft must share the tokenizer")
    prepare_model(loaded.model, runtime_options(loaded.recipe))
    return loaded.model


def load(model: str | Path = "default", dtype: str | torch.dtype = "float32", threads: int | None = None,
         engine_config: EngineConfig | None = None, prefill: str | None = None, recipe: Any = None,
         tp: int = 1, device: str | torch.device = "cpu", draft: str | DraftConfig | None = None) -> LLM:
    """Load `default`, a Hugging Face directory, a .gguf file or an llmspeed-saved directory (models/spec.py).

    `prefill`: the quantized linears' prefill path (`auto` measures per machine; default $LLMSPEED_PREFILL or auto).
    `draft`: speculative decoding, `ngram[:k]` or a draft model directory (`LLM.set_draft`).
    `recipe`: compress right after loading. A GGUF source taken as shipped (`default`) is then read in its float32
    form, since its Linears are already int4 and the recipe's steps act on float weights; `default:native` keeps
    the shipped blocks and stacks the recipe on them.
    `tp`: tensor-parallel ranks (runtime/tp.py): this process is rank 0 and spawns the others, or, under torchrun,
    every rank calls `load` and ranks other than 0 follow rank 0's forwards inside it and then exit the process.
    `device`: cpu, cuda, cuda:N or auto (runtime/device.py); `dtype="auto"`: float32 on the CPU, bfloat16 on CUDA.
    """
    from llmspeed.runtime.device import resolve_device, resolve_dtype
    from llmspeed.runtime.spec.config import parse_draft

    if tp < 1:
        raise ValueError(f"--tp must be >= 1, got {tp}")
    parse_draft(draft)  # a bad draft spec fails before any loading
    dev = resolve_device(device)
    dtype = resolve_dtype(dtype, dev)
    if draft is not None and (tp != 1 or dev.type != "cpu"):
        raise ValueError("--draft (speculative decoding) runs in one process on the CPU for now; "
                         "it cannot be combined with --tp or a CUDA --device")
    if tp != 1:
        if recipe:
            raise ValueError(f"--tp shards float weights; the recipe {recipe} cannot be sharded")
        return _load_tensor_parallel(str(model), dtype, tp, threads, engine_config, prefill, dev)
    from llmspeed.compress.api import check_devices, restore_structure
    from llmspeed.models.loading import load_model
    from llmspeed.models.spec import float_source
    from llmspeed.runtime.threads import set_threads

    set_threads(threads)
    if recipe:
        check_devices(recipe, dev.type)  # before any loading
    spec = float_source(model) if recipe else str(model)
    if spec != str(model):
        log.info("recipe %s: compressing the float32 weights of %s (%s:native keeps the shipped int4 blocks)",
                 recipe, model, model)
    loaded = load_model(spec, dtype, restore=restore_structure)
    check_devices(loaded.recipe, dev.type)  # a saved recipe, e.g. `default`'s int4 blocks
    llm = LLM(loaded.model, loaded.tokenizer, loaded.recipe, loaded.source, engine_config, prefill)
    if recipe:
        llm.compress_(recipe)  # on the CPU; the result moves to the device below
    llm.set_draft(draft)
    if dev.type != "cpu":
        llm.to_device(dev)
    llm.load_args = {"model": str(model), "dtype": dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch."),
                     "recipe": str(recipe) if recipe else None}
    return llm


def _load_tensor_parallel(model: str, dtype: str | torch.dtype, tp: int, threads: int | None,
                          engine_config: EngineConfig | None, prefill: str | None, device: torch.device) -> LLM:
    """Rank 0 of a tensor-parallel group gets an `LLM` over a `TPDriver`; a torchrun follower never returns."""
    import atexit

    from llmspeed.runtime.tp import TPDriver
    from llmspeed.runtime.tp_launch import load_rank

    dtype_name = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    loaded, launched, dev = load_rank(model, dtype_name, tp, threads, device)
    llm = LLM(TPDriver(loaded.model, launched.tp, dev), loaded.tokenizer, [], loaded.source, engine_config, prefill)
    llm.tp = launched
    atexit.register(llm.close)
    return llm


def compress_(target: LLM | nn.Module, recipe: Any, calib: Any = None, progress: bool = True) -> list[Any]:
    """`llmspeed.compress_`: an `LLM` (records the recipe, rebuilds its engine) or a bare `nn.Module`, in place."""
    if isinstance(target, LLM):
        return target.compress_(recipe, calib, progress)
    from llmspeed.compress.api import compress_ as compress_module

    return compress_module(target, recipe, calib, progress)
