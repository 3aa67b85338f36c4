"""Bad input gets a 4xx with an OpenAI-style error body and the server keeps serving; auth; 429 backpressure."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest

from tests.serving.conftest import API_KEY

H = {"Authorization": f"Bearer {API_KEY}"}
OK = {"prompt": "Hark", "max_tokens": 2, "temperature": 0}


def _err(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    e = r.json()["error"]
    assert set(e) == {"message", "type", "param", "code"} and e["message"]
    return e


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/completions", b'{"prompt": "x", "max_tokens": ', None),            # malformed JSON
    ("/v1/completions", b"[1, 2]", None),                                     # not an object
    ("/v1/completions", {"prompt": "x", "max_tokens": "10"}, "max_tokens"),   # wrong type
    ("/v1/completions", {"prompt": 5}, "prompt"),
    ("/v1/completions", {"prompt": "x", "temperature": "hot"}, "temperature"),
    ("/v1/completions", {"prompt": "x", "max_tokens": -3}, "max_tokens"),     # negative
    ("/v1/completions", {"prompt": "x", "n": 2}, "n"),
    ("/v1/completions", {"prompt": ""}, "prompt"),
    ("/v1/completions", {"max_tokens": 3}, "prompt"),                         # missing
    ("/v1/completions", {"prompt": "x", "presence_penalty": 0.5}, "presence_penalty"),  # unsupported
    ("/v1/completions", {"prompt": "x", "logprobs": 21}, "logprobs"),
    ("/v1/completions", {"prompt": "x", "logprobs": -1}, "logprobs"),
    ("/v1/completions", {"prompt": [], "max_tokens": 1}, "prompt"),
    ("/v1/completions", {"prompt": ["a", 5], "max_tokens": 1}, "prompt"),
    ("/v1/completions", {"prompt": [[1, 2], "a"], "max_tokens": 1}, "prompt"),
    ("/v1/completions", {"prompt": [1, 2, 100000], "max_tokens": 1}, "prompt"),  # outside the vocabulary
    ("/v1/completions", {"prompt": [[1, 2], [3, -1]], "max_tokens": 1}, "prompt"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "max_tokens"),  # 0 only with echo
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "echo": True, "stream": True}, "echo"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}, "top_logprobs"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "logprobs": True, "top_logprobs": 21},
     "top_logprobs"),
    ("/v1/completions", {"prompt": "x", "frobnicate": True}, "frobnicate"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 100000}, "max_tokens"),  # beyond the context window
    ("/v1/completions", {"prompt": "x " * 400, "max_tokens": 1}, "prompt"),
    ("/v1/chat/completions", {"messages": []}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]},
     "tools"),
])
def test_bad_requests_are_400_with_openai_body(server, path, body, param) -> None:
    kw = {"content": body, "headers": H | {"content-type": "application/json"}} if isinstance(body, bytes) else {
        "json": body, "headers": H}
    e = _err(httpx.post(f"{server.url}{path}", timeout=30, **kw), 400)
    assert e["type"] == "invalid_request_error"
    if param is not None:
        assert e["param"] == param, e
    assert httpx.post(f"{server.url}/v1/completions", json=OK, headers=H, timeout=30).status_code == 200


def test_unknown_model_404_unknown_route_404_and_body_too_large_413(server) -> None:
    e = _err(httpx.post(f"{server.url}/v1/completions", json=OK | {"model": "gpt-4"}, headers=H), 404)
    assert e["code"] == "model_not_found" and "gpt-4" in e["message"]
    _err(httpx.get(f"{server.url}/v1/nothing-here", headers=H), 404)
    _err(httpx.post(f"{server.url}/v1/completions", json={"prompt": "x" * (2 << 20)}, headers=H), 413)
    with pytest.raises(openai.BadRequestError, match="presence_penalty"):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0).completions.create(
            model="tiny", prompt="x", presence_penalty=1.0)
    assert httpx.post(f"{server.url}/v1/completions", json=OK, headers=H).status_code == 200


def test_auth(server) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {API_KEY}"}):
        for method, path in (("POST", "/v1/completions"), ("GET", "/v1/models"), ("GET", "/metrics")):
            e = _err(httpx.request(method, f"{server.url}{path}", json=OK, headers=headers), 401)
            assert e["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="nope", max_retries=0).models.list()
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_api_key_from_env(monkeypatch) -> None:
    from llmspeed.serving.auth import check_bearer, resolve_api_key

    monkeypatch.setenv("LLMSPEED_API_KEY", "envkey")
    assert resolve_api_key(None) == "envkey" and resolve_api_key("flag") == "flag"
    assert check_bearer("Bearer envkey", "envkey") and not check_bearer("Bearer envke", "envkey")


def test_queue_full_is_429_with_retry_after(make_server) -> None:
    srv = make_server(engine={"max_batch": 1}, max_queue=1)
    long = {"prompt": "Tomorrow and tomorrow", "max_tokens": 240, "temperature": 0, "stream": True,
            "ignore_eos": True}
    started = [threading.Event(), threading.Event()]
    release = threading.Event()

    def hold(i: int) -> None:  # distinct requests: identical ones in flight would run once (single-flight)
        with httpx.stream("POST", f"{srv.url}/v1/completions", json=long | {"seed": i}, timeout=120) as r:
            assert r.status_code == 200
            started[i].set()
            release.wait(60)  # closing the stream early aborts the request in the engine

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(2)]
    for i, t in enumerate(threads):
        t.start()
        assert started[i].wait(60)
    r = httpx.post(f"{srv.url}/v1/completions", json=OK, timeout=30)
    e = _err(r, 429)
    assert e["type"] == "rate_limit_error" and int(r.headers["retry-after"]) >= 1
    release.set()
    for t in threads:
        t.join(60)
    for _ in range(100):  # the aborted streams free their slots
        r = httpx.post(f"{srv.url}/v1/completions", json=OK, timeout=30)
        if r.status_code == 200:
            break
        threading.Event().wait(0.05)
    assert r.status_code == 200


def test_request_timeout_is_504(make_server) -> None:
    srv = make_server(request_timeout=0.05)
    r = httpx.post(f"{srv.url}/v1/completions", json={"prompt": "Out, out", "max_tokens": 200, "temperature": 0,
                                                       "ignore_eos": True}, timeout=30)
    _err(r, 504)
    assert httpx.get(f"{srv.url}/health").status_code == 200
