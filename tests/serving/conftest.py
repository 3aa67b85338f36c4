"""A live llmspeed server (uvicorn in a thread, 127.0.0.1, ephemeral port) over a tiny random model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

API_KEY = "test-key-123"


@pytest.fixture(scope="module")
def make_server(tiny_model_dir: Callable[..., Path]) -> Iterator[Callable[..., object]]:
    """Factory: make_server(**ServerConfig fields, engine=dict(EngineConfig fields)) -> started ThreadedServer."""
    import llmspeed
    from llmspeed.runtime.engine import EngineConfig
    from llmspeed.serving.app import create_app
    from llmspeed.serving.config import ServerConfig
    from llmspeed.serving.server import ThreadedServer

    started: list[ThreadedServer] = []

    def make(engine: dict | None = None, **cfg: object) -> ThreadedServer:
        ecfg = EngineConfig(**({"kv_cache_tokens": 4096, "max_batch": 16} | (engine or {})))
        llm = llmspeed.load(tiny_model_dir("llama"), engine_config=ecfg)
        app = create_app(llm, ServerConfig(**({"model_name": "tiny"} | cfg)))
        s = ThreadedServer(app).start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture(scope="module")
def server(make_server: Callable[..., object]) -> object:
    """The shared server of a test module: auth on, L1 cache, no L2."""
    return make_server(api_key=API_KEY, max_queue=64)


@pytest.fixture()
def client(server: object):
    import openai

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=60)  # type: ignore[attr-defined]
