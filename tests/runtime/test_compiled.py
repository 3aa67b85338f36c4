"""The compiled decode step (runtime/compiled.py): the AOTInductor runner equals eager (logits, KV writes, greedy
tokens) for batch 1 and a padded batch bucket across KV-length bucket boundaries; the torch.compile runner stays
reachable; packages are reused from the cache; a model change rebuilds the step; export failures fall back."""

from __future__ import annotations

import dataclasses
import logging
import threading

import pytest
import torch

import llmspeed
from llmspeed.runtime import aot
from llmspeed.runtime.compiled import CompileConfig
from llmspeed.runtime.sequence import SamplingParams

PROMPTS = ["Now is the winter of our discontent", "O Romeo"]  # as tests/compress: the same graphs, compiled once
BUCKET = 16


def _load(tiny_model_dir, cfg: CompileConfig | None):
    llm = llmspeed.load(tiny_model_dir("llama"))
    if cfg is not None:  # what the recipe's `compile` token sets (llm.runtime_options), with this test's bucket
        llm.options = dataclasses.replace(llm.options, compile=cfg)
        llm.reset_engine()
    return llm


def _greedy(llm, prompts: list[str], n: int) -> list[list[int]]:
    return [o.token_ids for o in llm.generate(prompts, max_new_tokens=n, ignore_eos=True)]


def _decode_step_both(llm) -> list[int]:
    """One decode step of the running batch through eager and through the compiled step, from the same KV cache;
    checks logits and the K/V they write; advances the batch by the eager argmax."""
    eng = llm.engine
    batch = eng.scheduler.schedule()
    assert batch is not None and not batch.is_prefill
    ids, meta, last = eng.runner.build_inputs(batch.seqs)
    kv = eng.kv
    real = kv.scratch_slot  # slots from here on are scratch: padded rows of a bucket may write there
    k0, v0 = kv.k.clone(), kv.v.clone()
    with torch.inference_mode():
        ref = llm.model(ids, meta, kv.layers, logits_index=last)  # [B, V]
        k_ref, v_ref = kv.k[:, :, :real].clone(), kv.v[:, :, :real].clone()
        kv.k.copy_(k0)
        kv.v.copy_(v0)
        got = eng.decode_fn(ids, meta, kv.layers, kv.scratch_slot)  # [B, V]
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)
    assert not torch.equal(k_ref, k0[:, :, :real])  # the step did write this token's keys
    torch.testing.assert_close(kv.k[:, :, :real], k_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(kv.v[:, :, :real], v_ref, atol=1e-5, rtol=0)
    toks = [int(t) for t in ref.argmax(-1)]
    for seq, tok in zip(batch.seqs, toks, strict=True):
        seq.num_computed = seq.num_tokens
        eng.processor.append_token(seq, tok, 0.0)
    return [s.num_tokens for s in batch.seqs]


@pytest.mark.parametrize("n_prompts", [1, 2])
def test_aot_step_equals_eager_across_bucket_boundary(tiny_model_dir, n_prompts: int) -> None:
    llm = _load(tiny_model_dir, CompileConfig(bucket=BUCKET))
    eng = llm.engine
    assert eng.decode_fn is not None and eng.decode_fn.runner == "aot"
    params = SamplingParams(max_new_tokens=64, ignore_eos=True)
    for p in PROMPTS[:n_prompts]:
        eng.add(eng.make_sequence(llm.tokenizer.encode(p), params))
    eng.step()  # prefill (eager)
    first = max(s.num_tokens for s in eng.scheduler.running)
    while max(s.num_tokens for s in eng.scheduler.running) < -(-first // BUCKET) * BUCKET + 3:  # cross a 16-key boundary
        _decode_step_both(llm)
    assert eng.decode_fn.runner == "aot"  # no silent fallback to dynamo
    llm.reset_engine()


def test_aot_greedy_equals_eager_single_and_ragged_batch(tiny_model_dir) -> None:
    llm = _load(tiny_model_dir, CompileConfig(bucket=BUCKET))
    eager = _load(tiny_model_dir, None)
    assert eager.engine.decode_fn is None
    assert _greedy(llm, PROMPTS[:1], 24) == _greedy(eager, PROMPTS[:1], 24)
    assert _greedy(llm, PROMPTS, 20) == _greedy(eager, PROMPTS, 20)  # B=2, ragged lengths
    assert llm.engine.decode_fn.runner == "aot"


def test_dynamo_runner_still_reachable(tiny_model_dir) -> None:
    llm = _load(tiny_model_dir, CompileConfig(bucket=BUCKET, runner="dynamo"))
    assert llm.engine.decode_fn.runner == "dynamo"
    assert _greedy(llm, PROMPTS[:1], 12) == _greedy(_load(tiny_model_dir, None), PROMPTS[:1], 12)


def test_cached_packages_are_loaded_not_recompiled(tiny_model_dir, monkeypatch) -> None:
    _greedy(_load(tiny_model_dir, CompileConfig(bucket=BUCKET)), PROMPTS[:1], 12)  # compiled (or cached) here

    def no_compile(*_a: object, **_k: object) -> None:
        raise AssertionError("recompiled a cached package")

    monkeypatch.setattr(aot, "compile_package", no_compile)
    llm = _load(tiny_model_dir, CompileConfig(bucket=BUCKET))  # a new model object: a fresh export, same graph
    assert _greedy(llm, PROMPTS[:1], 12) == _greedy(_load(tiny_model_dir, None), PROMPTS[:1], 12)
    assert llm.engine.decode_fn.runner == "aot"


def test_export_failure_falls_back_to_dynamo(tiny_model_dir, monkeypatch, caplog) -> None:
    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("cannot export this model")

    monkeypatch.setattr(aot, "build", broken)
    llm = _load(tiny_model_dir, CompileConfig(bucket=BUCKET))
    with caplog.at_level(logging.WARNING, logger="llmspeed.runtime.compiled"):
        out = _greedy(llm, PROMPTS[:1], 8)
    assert llm.engine.decode_fn.runner == "dynamo"
    assert any("cannot export this model" in r.getMessage() for r in caplog.records)
    assert out == _greedy(_load(tiny_model_dir, None), PROMPTS[:1], 8)


def test_model_change_rebuilds_the_step_hooks_do_not(tiny_model_dir) -> None:
    llm = _load(tiny_model_dir, CompileConfig(bucket=BUCKET))
    model = llm.model
    fn = llm.engine.decode_fn
    assert llm.reset_engine().decode_fn is fn  # nothing changed: kept (its compiled graphs with it)
    handle = model.model.layers[0].mlp.register_forward_hook(lambda *_: None)
    assert llm.reset_engine().decode_fn is fn  # profiler hooks come and go; exported graphs never run them
    handle.remove()
    with torch.no_grad():
        model.model.norm.weight = torch.nn.Parameter(model.model.norm.weight.clone(), requires_grad=False)
    fn2 = llm.reset_engine().decode_fn
    assert fn2 is not fn  # a replaced tensor: the old graphs' bound weights are stale
    model.model.layers[1].self_attn.fused = None
    assert llm.reset_engine().decode_fn is not fn2  # a changed fusion changes the traced graph
    llm.options = dataclasses.replace(llm.options, compile=dataclasses.replace(llm.options.compile, runner="dynamo"))
    assert llm.reset_engine().decode_fn.state is None  # the dynamo runner is guarded by dynamo itself


def test_config_validates_runner() -> None:
    assert CompileConfig().runner == "aot"
    with pytest.raises(ValueError, match="runner"):
        CompileConfig(runner="jit")


def test_every_llmspeed_op_has_a_c_shim_and_the_shipped_form_compiles(tiny_model_dir) -> None:
    """The shipped default's form (int4 codes + the exact int8-per-32 head) through the AOT runner: every llmspeed op
    a decode step can call is exported as a C entry point (no proxy-executor calls), and greedy equals eager."""
    from llmspeed import kernels
    from llmspeed.kernels.aoti import DECLARATIONS, c_shims

    if kernels.available():
        assert {op.name().split("::")[1] for op in c_shims()} == set(DECLARATIONS)
    llm = _load(tiny_model_dir, None)
    llmspeed.compress_(llm, "int8-head-g32,int4-g32")
    eager_out = _greedy(llm, PROMPTS, 12)
    llm.options = dataclasses.replace(llm.options, compile=CompileConfig(bucket=BUCKET))
    llm.reset_engine()
    assert _greedy(llm, PROMPTS, 12) == eager_out
    assert llm.engine.decode_fn.runner == "aot"


def test_background_compile_decodes_eager_until_the_package_is_ready(tiny_model_dir, monkeypatch, tmp_path) -> None:
    """`background=True` (what `serve` uses): a bucket whose package is not built yet decodes eager while a builder
    thread compiles it; later steps of that bucket run the package. Greedy output is the same throughout."""
    from llmspeed.runtime import compiled

    monkeypatch.setattr(compiled, "cache_dir", lambda kind="inductor": tmp_path / kind)  # a cold package cache
    release = threading.Event()
    real_compile = aot.compile_package
    builder: list[str] = []

    def held_compile(*a: object, **k: object) -> None:
        builder.append(threading.current_thread().name)
        assert release.wait(120)
        real_compile(*a, **k)

    monkeypatch.setattr(aot, "compile_package", held_compile)
    llm = _load(tiny_model_dir, CompileConfig(bucket=BUCKET, background=True))
    llm.load_args = None  # changed in memory, as far as a child knows: the compile runs in a thread of this process
    llm.reset_engine()
    ref = _greedy(_load(tiny_model_dir, None), PROMPTS[1:], 10)  # "O Romeo" + 10 tokens: one KV bucket of 16
    fn = llm.engine.decode_fn
    assert fn.worker is None
    assert _greedy(llm, PROMPTS[1:], 10) == ref  # the compile is held: every decode step ran eager
    assert fn._aot == {} and fn.builds is not None and fn.builds.num_pending == 1
    release.set()
    fn.builds.wait(300)
    assert builder and builder[0].startswith("llmspeed-aot")  # compiled off the decode thread
    assert _greedy(llm, PROMPTS[1:], 10) == ref
    assert len(fn._aot) == 1 and fn.runner == "aot"  # the package ran
    assert list((tmp_path / "aoti").glob("*.pt2"))


def test_background_compile_failure_keeps_the_bucket_eager(tiny_model_dir, monkeypatch, caplog) -> None:
    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("cannot export this model")

    monkeypatch.setattr(aot, "export_and_locate", broken)
    llm = _load(tiny_model_dir, CompileConfig(bucket=BUCKET, background=True))
    with caplog.at_level(logging.WARNING, logger="llmspeed.runtime.aot_builds"):
        out = _greedy(llm, PROMPTS[1:], 8)
    assert out == _greedy(_load(tiny_model_dir, None), PROMPTS[1:], 8)
    assert llm.engine.decode_fn.runner == "aot" and llm.engine.decode_fn._aot == {}  # eager, no dynamo compile
    assert sum("cannot export this model" in r.getMessage() for r in caplog.records) == 1  # tried once per bucket


def test_background_compile_in_a_child_process(tiny_model_dir, monkeypatch, tmp_path) -> None:
    """A model as `llmspeed.load` made it is compiled by a child process that rebuilds it from the load arguments;
    its package has the parent's cache key and runs bound to the parent's tensors."""
    from llmspeed.runtime import compiled

    monkeypatch.setattr(compiled, "cache_dir", lambda kind="inductor": tmp_path / kind)  # a cold package cache
    in_parent: list[int] = []
    real_compile = aot.compile_package
    monkeypatch.setattr(aot, "compile_package", lambda *a, **k: in_parent.append(1) or real_compile(*a, **k))
    llm = _load(tiny_model_dir, CompileConfig(bucket=BUCKET, background=True))
    fn = llm.engine.decode_fn
    assert fn.worker is not None and fn.worker["load"]["model"] == str(tiny_model_dir("llama"))
    ref = _greedy(_load(tiny_model_dir, None), PROMPTS[1:], 10)
    assert _greedy(llm, PROMPTS[1:], 10) == ref  # eager while the child works (or the package, if already done)
    fn.builds.wait(600)
    assert _greedy(llm, PROMPTS[1:], 10) == ref
    assert len(fn._aot) == 1 and not in_parent  # the package ran, and this process compiled nothing
    assert len(list((tmp_path / "aoti").glob("*.pt2"))) == 1
