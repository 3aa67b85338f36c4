"""The official openai client against a live server: completions and chat, streamed and not."""

from __future__ import annotations

import concurrent.futures as cf

import httpx


def test_completion_non_stream(client) -> None:
    r = client.completions.create(model="tiny", prompt="To be or not", max_tokens=8, temperature=0)
    assert r.object == "text_completion"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert isinstance(r.choices[0].text, str)
    assert r.usage.completion_tokens <= 8 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_completion_stream_equals_non_stream(client) -> None:
    kw = dict(model="tiny", prompt="Now is the winter", max_tokens=12, temperature=0, seed=None, ignore_eos=True)
    full = client.completions.create(**{k: v for k, v in kw.items() if k != "ignore_eos"},
                                     extra_body={"ignore_eos": True}, user="u1")
    chunks = list(client.completions.create(**{k: v for k, v in kw.items() if k != "ignore_eos"},
                                            extra_body={"ignore_eos": True}, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == full.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12
    assert full.usage.completion_tokens == 12


def test_chat_non_stream_and_stream(client) -> None:
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello there"}]
    r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=10, temperature=0)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    stream = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=10, temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == r.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason


def test_sse_wire_format_ends_with_done(server) -> None:
    from tests.serving.conftest import API_KEY

    body = {"prompt": "abc", "max_tokens": 3, "temperature": 0, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body,
                      headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    assert all(ln.startswith("data: ") for ln in lines)


def test_models_and_health(client, server) -> None:
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"  # no key needed


def test_concurrent_greedy_equals_sequential(make_server) -> None:
    import openai

    srv = make_server(cache_l1=0)  # no response cache: every request really runs in the engine
    client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="unused", max_retries=0, timeout=60)
    prompts = [f"Question {i}: what says the king of {w}?" for i, w in enumerate(["France", "Denmark", "Scotland",
                                                                                  "Navarre", "Naples", "Bohemia"])]

    def one(p: str) -> str:
        r = client.completions.create(model="tiny", prompt=p, max_tokens=16, temperature=0,
                                      extra_body={"ignore_eos": True})
        return r.choices[0].text

    sequential = [one(p) for p in prompts]
    with cf.ThreadPoolExecutor(len(prompts)) as ex:
        concurrent = list(ex.map(one, prompts))
    assert concurrent == sequential


def test_metrics_exposed(client, server) -> None:
    from tests.serving.conftest import API_KEY

    client.completions.create(model="tiny", prompt="Metrics please", max_tokens=3, temperature=0.3)
    text = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {API_KEY}"}).text
    for name in ("llmspeed:time_to_first_token_seconds_count", "llmspeed:time_per_output_token_seconds_bucket",
                 "llmspeed:e2e_request_latency_seconds_sum", "llmspeed:num_requests_waiting",
                 "llmspeed:num_requests_running", "llmspeed:generation_tokens_total", "llmspeed:kv_cache_blocks_used",
                 "llmspeed:prefix_cache_hits_total", 'llmspeed:response_cache_total{result="hit-l2"}'):
        assert name in text, name
    count = next(ln for ln in text.splitlines() if ln.startswith("llmspeed:time_to_first_token_seconds_count"))
    assert float(count.split()[-1]) >= 1
