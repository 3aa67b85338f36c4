"""The server over a tensor-parallel engine (`--tp 2`): concurrent requests batched by rank 0, the same greedy
text as one process, followers stopped with the server."""

from __future__ import annotations

import concurrent.futures as cf

import httpx
import torch

import llmspeed
from llmspeed.runtime.engine import EngineConfig
from llmspeed.serving.app import create_app
from llmspeed.serving.config import ServerConfig
from llmspeed.serving.server import ThreadedServer

PROMPTS = ["To be, or not to be", "The king said unto", "Hello there, my"]


def test_server_on_tp2(tiny_model_dir) -> None:
    d = tiny_model_dir("mistral")
    want = [o.text for o in llmspeed.load(d).generate(PROMPTS, max_new_tokens=10, ignore_eos=True)]
    llm = llmspeed.load(d, tp=2, threads=1, engine_config=EngineConfig(kv_cache_tokens=2048, max_batch=8))
    follower = llm.tp.procs[0]
    server = ThreadedServer(create_app(llm, ServerConfig(model_name="tiny", cache_l1=0, cache_l2="none"))).start()
    try:
        def ask(p: str) -> str:
            r = httpx.post(f"{server.url}/v1/completions", timeout=120,
                           json={"model": "tiny", "prompt": p, "max_tokens": 10, "temperature": 0, "ignore_eos": True})
            r.raise_for_status()
            return r.json()["choices"][0]["text"]

        with cf.ThreadPoolExecutor(3) as ex:  # arrive together: rank 0 batches them, the followers mirror it
            got = list(ex.map(ask, PROMPTS))
        assert got == want
        assert llm.logits(torch.tensor([[1, 2, 3]])).shape == (1, 3, llm.config.vocab_size)  # between requests
    finally:
        server.stop()
        llm.close()
    assert follower.wait(30) == 0
