"""Response-cache single-flight: identical deterministic requests in flight at once run once in the engine; the
others wait for that result and share it (streamed ones replay it), counted as result="coalesced"."""

from __future__ import annotations

import asyncio
import json
import re
import threading

import httpx

from llmspeed.serving.response_cache import SingleFlight


def _metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_identical_requests_in_flight_run_once(make_server) -> None:
    srv = make_server(cache_l1=64)
    body = {"prompt": "Is this a dagger which I see before me", "max_tokens": 200, "temperature": 0,
            "ignore_eos": True}
    before = httpx.get(f"{srv.url}/metrics", timeout=10).text
    n = 8
    barrier = threading.Barrier(n)
    out: list[tuple[str, str]] = [("", "")] * n

    def one(i: int) -> None:
        barrier.wait()
        if i % 4 == 3:  # some streamed: a follower replays the leader's result
            with httpx.stream("POST", f"{srv.url}/v1/completions", json=body | {"stream": True}, timeout=120) as r:
                events = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: {")]
                out[i] = ("".join(e["choices"][0]["text"] for e in events if e["choices"]),
                          r.headers["x-llmspeed-cache"])
        else:
            r = httpx.post(f"{srv.url}/v1/completions", json=body, timeout=120)
            assert r.status_code == 200, r.text
            out[i] = (r.json()["choices"][0]["text"], r.headers["x-llmspeed-cache"])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    texts = {t for t, _ in out}
    assert len(texts) == 1 and texts != {""}
    levels = [lvl for _, lvl in out]
    after = httpx.get(f"{srv.url}/metrics", timeout=10).text
    ran = _metric(after, "llmspeed:request_success_total", '{finished_reason="length"}') - _metric(
        before, "llmspeed:request_success_total", '{finished_reason="length"}')
    coalesced = _metric(after, "llmspeed:response_cache_total", '{result="coalesced"}')
    assert levels.count("miss") == ran == 1, levels  # the engine generated once
    assert coalesced == levels.count("coalesced") >= 1 and coalesced + levels.count("hit-l1") == n - 1


def test_a_failed_leader_lets_the_waiters_run_themselves() -> None:
    async def go() -> None:
        sf = SingleFlight()
        assert sf.join("k") is None  # leader
        waiter = sf.join("k")
        assert waiter is not None and len(sf) == 1
        sf.done("k", None)  # the leader failed
        assert await waiter is None and len(sf) == 0
        assert sf.join("k") is None  # the next one leads
        w2 = sf.join("k")
        sf.done("k", {"text": "x"})
        assert await w2 == {"text": "x"}

    asyncio.run(go())
