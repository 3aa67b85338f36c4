"""The `compile` recipe step: the compiled decode step equals eager (tokens and logits), survives save/load."""

from __future__ import annotations

import pytest
import torch

import llmspeed
from llmspeed.compress.api import Recipe
from llmspeed.compress.compile_step import CompileStepConfig
from llmspeed.llm import compress_, runtime_options
from llmspeed.runtime.compiled import CompileConfig
from llmspeed.runtime.sequence import SamplingParams

PROMPTS = ["Now is the winter of our discontent", "O Romeo"]


def _greedy(llm, prompts: list[str], n: int) -> list[list[int]]:
    return [o.token_ids for o in llm.generate(prompts, max_new_tokens=n, ignore_eos=True)]


@pytest.fixture(scope="module")
def compiled_llm(tiny_model_dir):
    llm = llmspeed.load(tiny_model_dir("llama"))
    compress_(llm, "compile-b16")  # small buckets: a short decode crosses a boundary
    return llm


def test_config_validates() -> None:
    assert Recipe.parse("int8,compile").steps == ("int8", "compile")
    assert Recipe.parse("compile-b64-autotune-cpp").specs()[0][2] == CompileStepConfig(
        bucket=64, mode="max-autotune-no-cudagraphs", cpp_wrapper=True)
    # the runtime's config is derived from the recipe token in one place (llm.runtime_options)
    assert runtime_options(["int8", "compile-b64-cpp"]).compile == CompileConfig(bucket=64, cpp_wrapper=True)
    assert runtime_options(["int8"]).compile is None
    with pytest.raises(ValueError):
        Recipe.parse("compile-b10")
    with pytest.raises(ValueError):
        CompileConfig(mode="fast")


def test_compiled_decode_logits_equal_eager(compiled_llm) -> None:
    eng = compiled_llm.engine
    assert eng.decode_fn is not None
    seq = eng.make_sequence(compiled_llm.tokenizer.encode(PROMPTS[0]), SamplingParams(max_new_tokens=40,
                                                                                   ignore_eos=True))
    eng.add(seq)
    eng.step()  # prefill (eager)
    first = seq.num_tokens
    while seq.num_tokens < -(-first // 16) * 16 + 3:  # KV length crosses a 16-token bucket boundary
        batch = eng.scheduler.schedule()
        assert batch is not None and not batch.is_prefill
        ids, meta, last = eng.runner.build_inputs(batch.seqs)
        with torch.inference_mode():
            ref = compiled_llm.model(ids, meta, eng.kv.layers, logits_index=last)  # [1, V]
            got = eng.decode_fn(ids, meta, eng.kv.layers, eng.kv.scratch_slot)  # writes the same K/V again
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)
        tok = int(ref.argmax())
        seq.num_computed = seq.num_tokens
        eng.processor.append_token(seq, tok, 0.0)
    compiled_llm.reset_engine()


def test_compiled_greedy_equals_eager_single_and_ragged_batch(tiny_model_dir, compiled_llm) -> None:
    eager = llmspeed.load(tiny_model_dir("llama"))
    assert eager.engine.decode_fn is None  # eager stays the default
    assert _greedy(compiled_llm, PROMPTS[:1], 24) == _greedy(eager, PROMPTS[:1], 24)
    assert _greedy(compiled_llm, PROMPTS, 20) == _greedy(eager, PROMPTS, 20)  # B=2, ragged lengths


def test_compile_survives_save_and_load(compiled_llm, tmp_path) -> None:
    out = compiled_llm.save(tmp_path / "m")
    back = llmspeed.load(out)
    assert "compile-b16" in back.recipe
    assert back.options.compile == compiled_llm.options.compile is not None
    assert back.engine.decode_fn is not None
    assert _greedy(back, PROMPTS[:1], 20) == _greedy(compiled_llm, PROMPTS[:1], 20)
