"""Replicas behind the router: load spreads under prefix affinity; a replica killed mid-load loses nothing."""

from __future__ import annotations

import concurrent.futures as cf
import os
import re
import signal
import time
from collections import Counter

import httpx
import pytest

from llmspeed.serving.load_balancer import AffinityConfig, Balancer

SYSTEM = "You are the box office assistant of the Globe Theatre. Answer briefly and politely. " * 4
QUESTIONS = [f"Question {i}: {q}" for i, q in enumerate(
    ["When does Hamlet start?", "Can I bring food?", "Where do I park?", "Is there a cloakroom?",
     "Are children allowed?", "How long is Macbeth?", "Do you sell programmes?", "Is the roof open?",
     "Can I get a refund?", "Where is the bar?", "Is there step-free access?", "What time do doors open?"])]


def chat(q: str) -> dict:
    return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]}


def test_prefix_affinity_spreads_shared_system_prompt_and_is_sticky() -> None:
    b = Balancer("prefix-affinity", 3)
    first = {q: b.choose([0, 1, 2], {}, chat(q)) for q in QUESTIONS}
    assert len(set(first.values())) >= 2  # the shared system prompt does not pin everything to one replica
    again = {q: b.choose([0, 1, 2], {}, chat(q)) for q in QUESTIONS}
    del first[QUESTIONS[0]]  # the very first request had no history to tell the shared prefix from
    assert {q: again[q] for q in first} == first  # same conversation -> the replica that has it cached


def test_prefix_affinity_on_token_blocks(tiny_model_dir) -> None:
    from llmspeed.serving.load_balancer import chat_tokenizer

    tokenize = chat_tokenizer(str(tiny_model_dir("llama")))
    assert tokenize is not None
    b = Balancer("prefix-affinity", 3, tokenize=tokenize)
    first = {q: b.choose([0, 1, 2], {}, chat(q)) for q in QUESTIONS}
    assert len(set(first.values())) >= 2
    ids = tokenize(chat(QUESTIONS[5]))
    shared = b.shared_prefix_len(ids)
    assert shared % 16 == 0 and 16 <= shared < len(ids)  # the template + system prompt, in whole KV blocks
    again = {q: b.choose([0, 1, 2], {}, chat(q)) for q in QUESTIONS[1:]}
    assert again == {q: first[q] for q in QUESTIONS[1:]}
    assert chat_tokenizer("/nonexistent/model") is None  # falls back to character blocks


def test_bounded_loads_cap_a_hot_key() -> None:
    b = Balancer("prefix-affinity", 3, AffinityConfig(epsilon=0.25))
    loads = {0: 0, 1: 0, 2: 0}
    for _ in range(30):  # one hot prompt, requests never finish
        loads[b.choose([0, 1, 2], loads, chat("same question"))] += 1
    assert max(loads.values()) <= -(-1.25 * 30 // 3) and min(loads.values()) > 0


def test_round_robin_and_least_conn() -> None:
    rr = Balancer("round-robin", 3)
    assert Counter(rr.choose([0, 1, 2], {}) for _ in range(9)) == {0: 3, 1: 3, 2: 3}
    lc = Balancer("least-conn", 3)
    assert lc.choose([0, 1, 2], {0: 5, 1: 0, 2: 3}) == 1
    with pytest.raises(LookupError):
        lc.choose([], {})


@pytest.fixture(scope="module")
def router(tiny_model_dir):
    from llmspeed.serving.router import RouterConfig, create_router_app
    from llmspeed.serving.server import ThreadedServer

    args = ("--model", str(tiny_model_dir("llama")), "--served-model-name", "tiny", "--threads", "1",
            "--cache-l1", "0", "--cache-l2", "none", "--kv-cache-tokens", "4096", "--compile", "off")
    app = create_router_app(RouterConfig(replicas=2, lb="prefix-affinity", worker_args=args, health_interval=0.3,
                                         start_timeout=120, model=str(tiny_model_dir("llama"))))
    srv = ThreadedServer(app).start(timeout=180)
    rs = app.state.replicas
    t0 = time.monotonic()
    while len(rs.healthy()) < 2 and time.monotonic() - t0 < 120:
        time.sleep(0.2)
    assert len(rs.healthy()) == 2
    yield srv, rs
    srv.stop()


def test_live_prefix_affinity_spreads_and_sticks(router) -> None:
    srv, rs = router
    t0 = time.monotonic()
    while len(rs.healthy()) < 2 and time.monotonic() - t0 < 90:
        time.sleep(0.2)

    def route(q: str) -> int:
        r = httpx.post(f"{srv.url}/v1/chat/completions", json=chat(q) | {"max_tokens": 2, "temperature": 0},
                       timeout=60)
        assert r.status_code == 200
        return int(r.headers["x-llmspeed-replica"])

    first = {q: route(q) for q in QUESTIONS}
    assert set(first.values()) == {0, 1}  # a shared system prompt does not pin all traffic to one replica
    assert sum(route(q) == first[q] for q in QUESTIONS[1:]) == len(QUESTIONS) - 1  # and a conversation sticks


def test_kill_replica_mid_load_every_request_answered(router) -> None:
    srv, rs = router
    body = {"prompt": "Now is the winter of our discontent", "max_tokens": 48, "temperature": 0, "ignore_eos": True}

    def one(i: int) -> int:
        r = httpx.post(f"{srv.url}/v1/completions", json=body | {"prompt": f"{body['prompt']} {i}"}, timeout=120)
        return r.status_code

    with cf.ThreadPoolExecutor(12) as ex:
        futs = [ex.submit(one, i) for i in range(12)]
        t0 = time.monotonic()
        while (rs.replicas[0].in_flight < 2 or sum(r.in_flight for r in rs.replicas) < 4) \
                and time.monotonic() - t0 < 30:
            time.sleep(0.01)
        victim = rs.replicas[0]
        os.kill(victim.proc.pid, signal.SIGKILL)
        codes = [f.result() for f in futs]
    assert codes == [200] * 12
    m = httpx.get(f"{srv.url}/metrics", timeout=10).text
    retried = re.search(r"^llmspeed_router:retries_total (\S+)$", m, re.M)
    assert retried and float(retried.group(1)) >= 1  # the victim's in-flight requests were retried elsewhere
    t0 = time.monotonic()  # the dead replica is restarted and rejoins the rotation
    while (victim.restarts < 1 or len(rs.healthy()) < 2) and time.monotonic() - t0 < 90:
        time.sleep(0.2)
    assert victim.restarts >= 1 and len(rs.healthy()) == 2
    assert httpx.post(f"{srv.url}/v1/completions", json=body, timeout=60).status_code == 200


def test_router_stream_and_models(router) -> None:
    srv, _ = router
    with httpx.stream("POST", f"{srv.url}/v1/chat/completions", timeout=60,
                      json=chat("Hi") | {"max_tokens": 4, "stream": True, "temperature": 0}) as r:
        lines = [ln for ln in r.iter_lines() if ln]
    assert r.status_code == 200 and lines[-1] == "data: [DONE]"
    assert httpx.get(f"{srv.url}/v1/models", timeout=30).json()["data"][0]["id"] == "tiny"


def test_stream_on_dying_replica_ends_with_error_event(router) -> None:
    srv, rs = router
    t0 = time.monotonic()
    while len(rs.healthy()) < 2 and time.monotonic() - t0 < 90:
        time.sleep(0.2)
    body = {"prompt": "Is this", "max_tokens": 240, "temperature": 0, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{srv.url}/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        first = next(ln for ln in lines if ln.startswith("data: {"))
        assert first
        os.kill(rs.replicas[int(r.headers["x-llmspeed-replica"])].proc.pid, signal.SIGKILL)
        rest = [ln for ln in lines if ln]
    assert rest[-1] == "data: [DONE]"
    assert any('"replica_failed"' in ln for ln in rest)
