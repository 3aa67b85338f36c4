"""The engine's greedy output vs a naive full-recompute reference and HF generate; batching; caches."""

from __future__ import annotations

import pytest
import torch

import llmspeed
from llmspeed.runtime.engine import EngineConfig

MARGIN = 1e-3  # a top-2 logit gap below this is a near-tie: either token is a correct greedy choice


def naive_greedy(llm, prompt_ids: list[int], n: int) -> tuple[list[int], list[float]]:
    """Full recompute every step (no KV cache); also returns the top-2 margin of each step."""
    ids, margins = list(prompt_ids), []
    for _ in range(n):
        logits = llm.logits(torch.tensor([ids]))[0, -1]
        top = torch.topk(logits, 2).values
        margins.append(float(top[0] - top[1]))
        ids.append(int(logits.argmax()))
    return ids[len(prompt_ids):], margins


def agree_until_near_tie(a: list[int], b: list[int], margins: list[float]) -> int:
    """Number of leading tokens compared; fails on a mismatch where the margin was clear."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if margins[i] < MARGIN:
            return i
        assert x == y, f"token {i} differs ({x} vs {y}) with clear margin {margins[i]:.4f}"
    return min(len(a), len(b))


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_engine_greedy_equals_naive_and_hf(tiny_model_dir, arch: str) -> None:
    import transformers as tf

    d = tiny_model_dir(arch)
    llm = llmspeed.load(d)
    prompt = "To be, or not to be: that is the"
    out = llm.generate(prompt, max_new_tokens=24, ignore_eos=True)[0]
    assert len(out.token_ids) == 24
    ref, margins = naive_greedy(llm, out.prompt_token_ids, 24)
    covered = agree_until_near_tie(out.token_ids, ref, margins)
    assert covered >= 18, f"only {covered} tokens compared before a near-tie"
    hf = tf.AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager").eval()
    with torch.no_grad():
        g = hf.generate(torch.tensor([out.prompt_token_ids]), do_sample=False, max_new_tokens=24,
                        min_new_tokens=24, pad_token_id=0)
    hf_ids = g[0, len(out.prompt_token_ids):].tolist()
    assert agree_until_near_tie(out.token_ids, hf_ids, margins) >= 18


def test_batched_ragged_equals_one_by_one(tiny_llm) -> None:
    prompts = ["Hello", "Now is the winter of our discontent made glorious", "O Romeo, Romeo", "A"]
    batched = tiny_llm.generate(prompts, max_new_tokens=16, ignore_eos=True)
    for p, b in zip(prompts, batched, strict=True):
        single = tiny_llm.generate(p, max_new_tokens=16, ignore_eos=True)[0]
        _ref, margins = naive_greedy(tiny_llm, single.prompt_token_ids, 16)
        assert agree_until_near_tie(b.token_ids, single.token_ids, margins) >= 12


def test_prefix_cache_reuses_blocks_and_keeps_output(tiny_model_dir) -> None:
    llm = llmspeed.load(tiny_model_dir("llama"), engine_config=EngineConfig(block_size=4, kv_cache_tokens=1024))
    system = "You are a helpful assistant who answers in the style of Shakespeare. " * 2
    first = llm.generate(system + "Who art thou?", max_new_tokens=8, ignore_eos=True)[0]
    assert first.timings["cached_prompt_tokens"] == 0
    second = llm.generate(system + "Whence comest thou?", max_new_tokens=8, ignore_eos=True)[0]
    assert second.timings["cached_prompt_tokens"] >= 16
    nocache = llmspeed.load(tiny_model_dir("llama"), engine_config=EngineConfig(enable_prefix_cache=False))
    ref = nocache.generate(system + "Whence comest thou?", max_new_tokens=8, ignore_eos=True)[0]
    assert second.token_ids == ref.token_ids
    assert llm.engine.stats().prefix_cache_hit_tokens >= 16


def test_preemption_when_kv_is_scarce_keeps_outputs(tiny_model_dir) -> None:
    """A KV cache too small for all requests at once: requests are preempted and recomputed, none lost."""
    d = tiny_model_dir("llama")
    small = llmspeed.load(d, engine_config=EngineConfig(block_size=4, kv_cache_tokens=64, enable_prefix_cache=False))
    prompts = ["Good morrow, sir", "What light through yonder", "Friends, Romans"]
    outs = small.generate(prompts, max_new_tokens=12, ignore_eos=True)
    assert small.engine.stats().num_preemptions > 0
    big = llmspeed.load(d)
    for p, o in zip(prompts, outs, strict=True):
        assert o.token_ids == big.generate(p, max_new_tokens=12, ignore_eos=True)[0].token_ids


def test_eos_stops_unless_ignored(tiny_llm) -> None:
    eos = tiny_llm.tokenizer.eos_token_ids[0]
    # make EOS the argmax everywhere by boosting its lm_head row
    head = tiny_llm.model.lm_head.weight
    with torch.no_grad():
        saved = head[eos].clone()
        head[eos] = head.abs().max() * 50 * torch.sign(tiny_llm.model.model.norm.weight.mean() + 1)
    try:
        probe = tiny_llm.generate("Hello", max_new_tokens=5)[0]
        if probe.token_ids and probe.token_ids[-1] == eos:
            assert probe.finish_reason == "stop" and len(probe.token_ids) < 5
        forced = tiny_llm.generate("Hello", max_new_tokens=5, ignore_eos=True)[0]
        assert len(forced.token_ids) == 5 and forced.finish_reason == "length"
    finally:
        with torch.no_grad():
            head[eos] = saved


def test_stop_string_cuts_text(tiny_llm) -> None:
    full = tiny_llm.generate("To be or", max_new_tokens=20, ignore_eos=True)[0]
    assert len(full.text) > 6
    stop = full.text[3:6]
    cut = tiny_llm.generate("To be or", max_new_tokens=20, ignore_eos=True, stop=[stop])[0]
    assert cut.finish_reason == "stop"
    assert stop not in cut.text and full.text.startswith(cut.text)
    streamed = "".join(tiny_llm.stream("To be or", max_new_tokens=20, ignore_eos=True, stop=[stop]))
    assert streamed == cut.text


def test_sampling_seeded_is_reproducible_and_topk1_is_greedy(tiny_llm) -> None:
    a = tiny_llm.generate("Hark", max_new_tokens=12, temperature=1.0, seed=7, ignore_eos=True)[0]
    b = tiny_llm.generate("Hark", max_new_tokens=12, temperature=1.0, seed=7, ignore_eos=True)[0]
    c = tiny_llm.generate("Hark", max_new_tokens=12, temperature=1.0, seed=8, ignore_eos=True)[0]
    assert a.token_ids == b.token_ids and a.token_ids != c.token_ids
    g = tiny_llm.generate("Hark", max_new_tokens=12, ignore_eos=True)[0]
    k1 = tiny_llm.generate("Hark", max_new_tokens=12, temperature=0.8, top_k=1, seed=3, ignore_eos=True)[0]
    assert k1.token_ids == g.token_ids


def test_top_p_keeps_only_the_nucleus() -> None:
    from llmspeed.layers.sampler import sample_one

    logits = torch.log(torch.tensor([0.6, 0.3, 0.05, 0.05]))
    gen = torch.Generator().manual_seed(0)
    seen = {sample_one(logits, 1.0, 0, 0.8, gen) for _ in range(300)}
    assert seen == {0, 1}


@pytest.mark.slow
def test_default_model_greedy_matches_hf_generate(default_llm) -> None:
    import transformers as tf

    from llmspeed.models.default_model import default_gguf_path

    g = default_gguf_path()
    hf = tf.AutoModelForCausalLM.from_pretrained(g.parent, gguf_file=g.name, attn_implementation="eager",
                                                 dtype=torch.float32).eval()
    out = default_llm.generate("The capital of France is", max_new_tokens=32, ignore_eos=True)[0]
    ref, margins = naive_greedy(default_llm, out.prompt_token_ids, 32)
    assert agree_until_near_tie(out.token_ids, ref, margins) >= 24
    with torch.no_grad():
        hf_out = hf.generate(torch.tensor([out.prompt_token_ids]), do_sample=False, max_new_tokens=32,
                             min_new_tokens=32, pad_token_id=2)
    hf_ids = hf_out[0, len(out.prompt_token_ids):].tolist()
    # HF's min_new_tokens masks EOS, so HF takes the runner-up where greedy picks EOS: compare up to it
    eos = default_llm.tokenizer.eos_token_ids[0]
    upto = out.token_ids.index(eos) if eos in out.token_ids else len(out.token_ids)
    assert upto >= 16
    assert agree_until_near_tie(out.token_ids[:upto], hf_ids[:upto], margins) >= min(upto, 24)
    assert "Paris" in default_llm.generate("The capital of France is", max_new_tokens=8)[0].text
