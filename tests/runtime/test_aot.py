"""runtime/aot.py helpers: the package cache key, the model-state signature (the heartbeat: tests/util)."""

from __future__ import annotations

import logging
import threading

import pytest
import torch

import llmspeed
from llmspeed.runtime import aot
from llmspeed.runtime.compiled import _forward_aot


class _Beats(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.beat = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if "still compiling" in record.getMessage():
            self.beat.set()


@pytest.fixture()
def beats():
    h = _Beats()
    logger = logging.getLogger(aot.__name__)
    old = logger.level
    logger.addHandler(h)
    logger.setLevel(logging.DEBUG)
    yield h
    logger.removeHandler(h)
    logger.setLevel(old)


def _inputs(B: int, S: int, scratch: int) -> tuple[torch.Tensor, ...]:  # ids, positions, slots, gather
    return (torch.zeros(B, 1, dtype=torch.long), torch.full((B, 1), 2, dtype=torch.long),
            torch.full((B,), scratch, dtype=torch.long), torch.full((B, S), scratch, dtype=torch.long))


def test_cache_key_follows_the_graph_not_the_process(tiny_model_dir) -> None:
    llm = llmspeed.load(tiny_model_dir("llama"))
    kv = [t for pair in llm.engine.kv.layers for t in pair]
    scratch = llm.engine.kv.scratch_slot
    opts = {"max_autotune": False}
    k1 = aot.cache_key(aot.export_step(llm.model, _forward_aot, _inputs(1, 16, scratch), kv), opts)
    again = llmspeed.load(tiny_model_dir("llama"))  # other tensor objects, same graph: same key
    kv2 = [t for pair in again.engine.kv.layers for t in pair]
    assert aot.cache_key(aot.export_step(again.model, _forward_aot, _inputs(1, 16, scratch), kv2), opts) == k1
    bigger = [torch.empty(t.shape[0], t.shape[1] + 16, t.shape[2]) for t in kv]  # another KV cache size
    assert aot.cache_key(aot.export_step(llm.model, _forward_aot, _inputs(1, 16, scratch), bigger), opts) != k1
    ep32 = aot.export_step(llm.model, _forward_aot, _inputs(1, 32, scratch), kv)
    assert aot.cache_key(ep32, opts) != k1  # another KV bucket
    assert aot.cache_key(ep32, {"max_autotune": True}) != aot.cache_key(ep32, opts)


def test_model_state_tracks_tensors_and_flags_not_hooks(tiny_model_dir) -> None:
    model = llmspeed.load(tiny_model_dir("llama")).model
    s0 = aot.model_state(model)
    assert aot.model_state(model) == s0
    h = model.lm_head.register_forward_pre_hook(lambda *_: None)
    assert aot.model_state(model) == s0
    h.remove()
    model.model.layers[0].mlp.flag_for_test = True  # any plain attribute a forward could branch on
    assert aot.model_state(model) != s0
    del model.model.layers[0].mlp.flag_for_test
    assert aot.model_state(model) == s0
    with torch.no_grad():
        model.lm_head.weight.data = model.lm_head.weight.data.clone()  # same Parameter, new storage
    assert aot.model_state(model) != s0
