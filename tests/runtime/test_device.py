"""The device abstraction, tested on the CPU: device/dtype resolution, `device="cpu"` explicitly, the engine's
step on a non-CPU device (the meta device, watched by a dispatch mode: no op may mix host tensors into the model's
device, which CUDA would refuse), recipe/device pairs; and the same parity checks on CUDA where a GPU is."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import llmspeed
from llmspeed.compress.api import check_devices
from llmspeed.runtime.device import resolve_device, resolve_dtype
from llmspeed.runtime.engine import Engine, EngineConfig
from llmspeed.runtime.sequence import SamplingParams


class _NoHostTensors(TorchDispatchMode):
    """Records every op that mixes a host tensor (beyond a 0-d scalar) with meta tensors — what fails on CUDA."""

    def __init__(self) -> None:
        super().__init__()
        self.mixed: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        ts = [t for t in tree_flatten((args, kwargs or {}))[0] if isinstance(t, torch.Tensor)]
        if any(t.device.type == "meta" for t in ts) and any(t.device.type == "cpu" and t.dim() > 0 for t in ts):
            self.mixed.append(str(func))
        return func(*args, **(kwargs or {}))


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")


def test_resolve_device_and_dtype(monkeypatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("meta")).type == "meta"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="--device must be one of"):
        resolve_device("tpu")
    assert resolve_dtype("auto", torch.device("cpu")) == "float32"
    assert resolve_dtype("auto", torch.device("cuda")) == "bfloat16"
    assert resolve_dtype("float16", torch.device("cuda")) == "float16"


def test_explicit_cpu_device_is_the_default_path(tiny_model_dir) -> None:
    d = tiny_model_dir("llama")
    a = llmspeed.load(d)
    b = llmspeed.load(d, device=torch.device("cpu"), dtype="auto")
    assert b.device.type == "cpu" and b.dtype == torch.float32
    assert a.generate(["To be, or not"], max_new_tokens=8)[0].token_ids == \
        b.generate(["To be, or not"], max_new_tokens=8)[0].token_ids


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@torch.inference_mode()
def test_engine_step_follows_the_model_device(tiny_model_dir, arch: str) -> None:
    """Prefill (ragged batch) and decode on the meta device: inputs, KV cache, attention and logits all there."""
    llm = llmspeed.load(tiny_model_dir(arch))
    model = llm.model.to("meta")
    with _NoHostTensors() as mode:
        _prefill_and_decode(llm, model, arch)
    assert not mode.mixed, mode.mixed


def _prefill_and_decode(llm, model, arch) -> None:  # type: ignore[no-untyped-def]
    eng = Engine(model, llm.tokenizer, EngineConfig(kv_cache_tokens=256, block_size=16))
    assert eng.kv.k.device.type == "meta"
    seqs = [eng.make_sequence(ids, SamplingParams(max_new_tokens=4)) for ids in ([5, 6, 7, 8, 9], [10, 11])]
    for s in seqs:
        eng.add(s)
    eng.scheduler.drain_inbox()
    batch = eng.scheduler.schedule()
    assert batch is not None and batch.is_prefill
    logits = eng.runner.forward(batch)  # [B, V]
    assert logits.device.type == "meta" and logits.shape == (2, llm.config.vocab_size)
    eng._update(batch, [1, 2], 0.0)  # as if sampled: the next step decodes
    batch = eng.scheduler.schedule()
    assert batch is not None and not batch.is_prefill
    assert eng.runner.forward(batch).device.type == "meta"
    llm.model = model
    assert llm.logits(torch.tensor([[1, 2, 3]])).device.type == "meta"  # the no-cache path too


def test_recipe_device_pairs() -> None:
    check_devices("bf16,prune-magnitude-50,svd-r8", "cuda")
    check_devices("int4-g32,int8", "cpu")
    with pytest.raises(ValueError, match=r"int4-g32 \(cpu only\) cannot run on cuda; steps for cuda: .*bf16"):
        check_devices("bf16,int4-g32", "cuda")


def test_native_default_refuses_cuda(monkeypatch) -> None:
    """The embedded model as shipped carries int4 CPU-kernel blocks: on CUDA that is one clear error."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="cannot run on cuda"):
        llmspeed.load("default", device="cuda")


@CUDA
@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "gpt2"])
def test_cuda_matches_cpu(tiny_model_dir, arch: str) -> None:
    """The CPU parity checks on the GPU: float32 logits within 1e-3 (TF32 may be on), greedy tokens identical."""
    d = tiny_model_dir(arch)
    cpu, gpu = llmspeed.load(d), llmspeed.load(d, device="cuda", dtype="float32")
    ids = torch.randint(0, 512, (2, 40), generator=torch.Generator().manual_seed(1))
    assert (cpu.logits(ids) - gpu.logits(ids).cpu()).abs().max().item() <= 1e-3
    prompts = ["To be, or not to be, that is the question", "The king said", "Hello"]
    o1 = cpu.generate(prompts, max_new_tokens=12, ignore_eos=True)
    o2 = gpu.generate(prompts, max_new_tokens=12, ignore_eos=True)
    assert [o.token_ids for o in o1] == [o.token_ids for o in o2]
    s1 = cpu.generate(prompts[:1], max_new_tokens=8, temperature=0.8, seed=3)[0].token_ids
    assert len(gpu.generate(prompts[:1], max_new_tokens=8, temperature=0.8, seed=3)[0].token_ids) == len(s1)


@CUDA
def test_cuda_bf16_default(tiny_model_dir) -> None:
    llm = llmspeed.load(tiny_model_dir("llama"), device="cuda", dtype="auto")
    assert llm.dtype == torch.bfloat16 and llm.engine.kv.k.device.type == "cuda"
    assert len(llm.generate(["Hello"], max_new_tokens=4, ignore_eos=True)[0].token_ids) == 4


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="tensor parallel over nccl needs 2 CUDA GPUs")
def test_cuda_tp2_matches_one_gpu(tiny_model_dir) -> None:
    d = tiny_model_dir("llama")
    one = llmspeed.load(d, device="cuda", dtype="float32")
    tp = llmspeed.load(d, device="cuda", dtype="float32", tp=2)
    try:
        o1 = one.generate(["To be, or not to be"], max_new_tokens=12, ignore_eos=True)[0].token_ids
        assert tp.generate(["To be, or not to be"], max_new_tokens=12, ignore_eos=True)[0].token_ids == o1
    finally:
        tp.close()
