"""`llmspeed serve`'s engine defaults live in one place (serving/config.py): the serve CLI, the Ray backend and
`llmspeed auto`'s "server defaults" baseline all read them."""

from __future__ import annotations

import inspect

import pytest

from llmspeed.serving.config import (
    SERVE_ENGINE_DEFAULTS,
    SERVE_KV_CACHE_TOKENS,
    SERVE_MAX_BATCH,
    SERVE_MAX_BATCH_TOKENS,
    SERVE_MAX_QUEUE,
    ServerConfig,
)


def test_serve_cli_defaults_are_the_constants() -> None:
    from llmspeed.cli.serve import serve

    params = inspect.signature(serve).parameters
    got = {name: params[name].default.default for name in ("max_batch", "max_batch_tokens", "kv_cache_tokens",
                                                            "max_queue")}
    assert got == {"max_batch": SERVE_MAX_BATCH, "max_batch_tokens": SERVE_MAX_BATCH_TOKENS,
                   "kv_cache_tokens": SERVE_KV_CACHE_TOKENS, "max_queue": SERVE_MAX_QUEUE}
    assert ServerConfig().max_queue == SERVE_MAX_QUEUE


def test_auto_serving_defaults_are_the_servers() -> None:
    from llmspeed.auto.space import BATCH_TOKENS, MAX_BATCH, SERVING_DEFAULTS

    assert SERVING_DEFAULTS == {"max_batch": SERVE_MAX_BATCH, "max_batch_tokens": SERVE_MAX_BATCH_TOKENS}
    assert SERVE_MAX_BATCH in MAX_BATCH and SERVE_MAX_BATCH_TOKENS in BATCH_TOKENS  # the search can pick them


def test_ray_replica_engine_fills_in_the_serve_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    import llmspeed
    from llmspeed.serving import ray_app

    seen = {}

    def fake_load(*a, engine_config=None, **kw):
        seen["cfg"] = engine_config
        raise RuntimeError("stop")

    monkeypatch.setattr(llmspeed, "load", fake_load)
    with pytest.raises(RuntimeError, match="stop"):
        ray_app.build_app("default", "float32", None, None, {"max_batch": 4}, ServerConfig())
    cfg = seen["cfg"]
    assert (cfg.max_batch, cfg.max_batch_tokens, cfg.kv_cache_tokens) == (4, SERVE_MAX_BATCH_TOKENS,
                                                                         SERVE_KV_CACHE_TOKENS)
    assert SERVE_ENGINE_DEFAULTS["max_batch"] == SERVE_MAX_BATCH
