"""L2 response cache on a real redis-server on loopback (LLMSPEED_TEST_REDIS, started by scripts/test.sh)."""

from __future__ import annotations

import logging
import os
import uuid

import httpx
import pytest

REDIS = os.environ.get("LLMSPEED_TEST_REDIS")
needs_redis = pytest.mark.skipif(not REDIS, reason="LLMSPEED_TEST_REDIS is unset (scripts/test.sh starts a "
                                                    "redis-server and sets it)")


@needs_redis
def test_redis_l2_hit_after_restart(make_server) -> None:
    body = {"prompt": f"Redis round {uuid.uuid4().hex}", "max_tokens": 5, "temperature": 0}
    s1 = make_server(cache_l2=REDIS, cache_ttl=60)
    a = httpx.post(f"{s1.url}/v1/completions", json=body, timeout=60)
    assert a.headers["x-llmspeed-cache"] == "miss"
    s1.stop()
    s2 = make_server(cache_l2=REDIS, cache_ttl=60)
    b = httpx.post(f"{s2.url}/v1/completions", json=body, timeout=60)
    assert b.headers["x-llmspeed-cache"] == "hit-l2" and b.content == a.content


@needs_redis
def test_redis_entries_have_a_ttl() -> None:
    import redis

    from llmspeed.serving.response_cache import RedisStore

    store = RedisStore(REDIS, ttl=30)  # type: ignore[arg-type]
    key = uuid.uuid4().hex
    store.put(key, {"x": 1})
    assert store.get(key) == {"x": 1}
    ttl = redis.Redis.from_url(REDIS).ttl(f"llmspeed:resp:{key}")  # type: ignore[arg-type]
    assert 0 < ttl <= 30
    store.close()


def test_unreachable_redis_degrades_to_l1(make_server, caplog) -> None:
    from llmspeed.serving.server import bind_socket

    sock = bind_socket()  # a port nobody answers on once closed
    port = sock.getsockname()[1]
    sock.close()
    with caplog.at_level(logging.WARNING, logger="llmspeed.serving.response_cache"):
        srv = make_server(cache_l2=f"redis://127.0.0.1:{port}/0")
        body = {"prompt": "Unreachable", "max_tokens": 3, "temperature": 0}
        a = httpx.post(f"{srv.url}/v1/completions", json=body, timeout=60)
        b = httpx.post(f"{srv.url}/v1/completions", json=body, timeout=60)
    assert a.status_code == b.status_code == 200
    assert a.headers["x-llmspeed-cache"] == "miss" and b.headers["x-llmspeed-cache"] == "hit-l1"
    assert any("unreachable" in r.getMessage() for r in caplog.records)
