"""Continuous batching, prefix caching and the response cache (L1, sqlite L2 across a restart)."""

from __future__ import annotations

import re
import threading
import time

import httpx

from tests.serving.conftest import API_KEY

H = {"Authorization": f"Bearer {API_KEY}"}


def metric(url: str, name: str, headers: dict | None = None) -> float:
    text = httpx.get(f"{url}/metrics", headers=headers or H, timeout=10).text
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", text, re.M):
        total += float(m.group(1))
    return total


def test_short_request_finishes_while_long_one_generates(server) -> None:
    """Continuous batching: a short request sent after a long one started finishes first."""
    done: dict[str, float] = {}
    first_chunk = threading.Event()
    long_body = {"prompt": "Once upon a midnight", "max_tokens": 200, "temperature": 0, "stream": True,
                 "ignore_eos": True}

    def run_long() -> None:
        with httpx.stream("POST", f"{server.url}/v1/completions", json=long_body, headers=H, timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    first_chunk.set()
        done["long"] = time.monotonic()

    t = threading.Thread(target=run_long)
    t.start()
    assert first_chunk.wait(60)
    r = httpx.post(f"{server.url}/v1/completions", headers=H, timeout=60,
                   json={"prompt": "Short one", "max_tokens": 2, "temperature": 0.7, "ignore_eos": True})
    done["short"] = time.monotonic()
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
    t.join(120)
    assert done["short"] < done["long"]


def test_prefix_cache_hit_for_shared_system_prompt(server) -> None:
    system = "You are a helpful assistant for the Globe Theatre. " * 6  # several full KV blocks
    before = metric(server.url, "llmspeed:prefix_cache_hits_total")
    cached = []
    for q in ("When does the play start?", "Where can I park?"):
        r = httpx.post(f"{server.url}/v1/chat/completions", headers=H, timeout=60,
                       json={"messages": [{"role": "system", "content": system}, {"role": "user", "content": q}],
                             "max_tokens": 4, "temperature": 0.5})
        assert r.status_code == 200
        cached.append(r.json()["usage"]["prompt_tokens_details"]["cached_tokens"])
    assert cached[1] >= 16  # the second request skipped prefill of the shared blocks
    assert metric(server.url, "llmspeed:prefix_cache_hits_total") >= before + cached[1]


def test_response_cache_hit_identical_and_counted(server) -> None:
    body = {"prompt": "Friends, Romans, countrymen", "max_tokens": 8, "temperature": 0}
    hits0 = metric(server.url, "llmspeed:response_cache_total")
    a = httpx.post(f"{server.url}/v1/completions", json=body, headers=H, timeout=60)
    b = httpx.post(f"{server.url}/v1/completions", json=body, headers=H, timeout=60)
    assert a.headers["x-llmspeed-cache"] == "miss" and b.headers["x-llmspeed-cache"] == "hit-l1"
    assert a.content == b.content
    text = httpx.get(f"{server.url}/metrics", headers=H).text
    assert re.search(r'^llmspeed:response_cache_total\{result="hit-l1"\} ([1-9][0-9.]*)', text, re.M)
    assert metric(server.url, "llmspeed:response_cache_total") > hits0
    # the same request streamed is replayed from the cache as SSE with the same text
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body | {"stream": True}, headers=H) as r:
        assert r.headers["x-llmspeed-cache"] == "hit-l1"
        import json
        parts = [json.loads(ln[6:]) for ln in r.iter_lines() if ln.startswith("data: {")]
    assert "".join(p["choices"][0]["text"] for p in parts) == a.json()["choices"][0]["text"]
    # sampled requests without a seed are never cached
    s = {"prompt": "Friends, Romans, countrymen", "max_tokens": 4, "temperature": 0.9}
    for _ in range(2):
        assert httpx.post(f"{server.url}/v1/completions", json=s, headers=H).headers["x-llmspeed-cache"] == "miss"


def test_sqlite_l2_survives_restart(make_server, tmp_path) -> None:
    spec = f"sqlite:{tmp_path / 'responses.sqlite'}"
    body = {"messages": [{"role": "user", "content": "Is this a dagger?"}], "max_tokens": 6, "temperature": 0}
    s1 = make_server(cache_l2=spec)
    first = httpx.post(f"{s1.url}/v1/chat/completions", json=body, timeout=60)
    assert first.headers["x-llmspeed-cache"] == "miss"
    s1.stop()
    s2 = make_server(cache_l2=spec)
    again = httpx.post(f"{s2.url}/v1/chat/completions", json=body, timeout=60)
    assert again.headers["x-llmspeed-cache"] == "hit-l2"
    assert again.content == first.content
    third = httpx.post(f"{s2.url}/v1/chat/completions", json=body, timeout=60)
    assert third.headers["x-llmspeed-cache"] == "hit-l1"
    assert metric(s2.url, "llmspeed:response_cache_total", {}) >= 2


def test_fifo_policy_evicts_oldest() -> None:
    from llmspeed.serving.response_cache import L1Cache

    lru, fifo = L1Cache(2, "lru"), L1Cache(2, "fifo")
    for c in (lru, fifo):
        c.put("a", {"v": 1})
        c.put("b", {"v": 2})
        c.get("a")
        c.put("c", {"v": 3})
    assert lru.get("a") is not None and lru.get("b") is None
    assert fifo.get("a") is None and fifo.get("b") is not None
